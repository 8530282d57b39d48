"""Builds Argo Workflows' ``workflow-controller`` and ``argo-lint`` (a tiny program running
Argo's own offline lint, what ``argo lint --offline`` runs) from the
``github.com/argoproj/argo-workflows/v4`` Go module into the versioned cache
(``~/.cache/bertops/argo-workflows/v<version>``), and copies Argo's full CRDs
(``manifests/base/crds/full``) beside them.

For local tests only: security flaws are reported for this release, so these binaries are
never shipped in an image and the controller only ever runs bound to loopback against the
embedded API server (:mod:`.run`); its one server that upstream binds to every interface
(healthz/pprof, port 6060) is moved to loopback by :func:`loopback_controller_main`.
``cmd/argo`` is not built: it embeds the UI, which the module zip does not carry. A wrapper
module requires argo-workflows (its go.mod has no local replaces) and holds the lint
program and the controller's main package. A cached build is reused without the network.

Called by ``make argo-workflows`` (``python -m bertops.cluster.argo_workflows.build``, part
of ``make dev``) and the Argo tests' fixtures.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from bertops.cluster.gomod import Progress, compile_packages, module_info
from bertops.cluster.kubernetes_source import cache_root, find_go, say

ARGO_VERSION = "4.0.5"
ARGO_MODULE = "github.com/argoproj/argo-workflows/v4"
GO_DIRECTIVE = "1.25.7"  # the upstream go.mod's

# The program `argo-lint FILE...`: exit 0 when every Workflow/WorkflowTemplate in the files
# passes Argo's offline lint (strict), 1 with the findings on stdout otherwise.
LINT_MAIN = """// argo-lint runs Argo Workflows' offline lint (what `argo lint --offline` runs)
// on the files given as arguments. Built by bertops for its local tests only.
package main

import (
	"context"
	"os"

	"github.com/argoproj/argo-workflows/v4/cmd/argo/lint"
	"github.com/argoproj/argo-workflows/v4/pkg/apiclient"
	"github.com/argoproj/argo-workflows/v4/util/logging"
)

func main() {
	logger := logging.NewSlogLogger(logging.Warn, logging.Text)
	ctx := logging.WithLogger(context.Background(), logger)
	files := os.Args[1:]
	opts := apiclient.Opts{Offline: true, OfflineFiles: files}
	ctx, client, err := apiclient.NewClientFromOptsWithContext(ctx, opts)
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\\n")
		os.Exit(2)
	}
	kinds := []string{"workflows", "workflowtemplates", "cronworkflows", "clusterworkflowtemplates"}
	lintOpts := lint.LintOptions{Files: files, Strict: true, Printer: os.Stdout}
	if err := lint.RunLint(ctx, client, kinds, "simple", true, lintOpts); err != nil {
		os.Stderr.WriteString(err.Error() + "\\n")
		os.Exit(2)
	}
}
"""


def argo_dir() -> Path:
    return cache_root() / "argo-workflows" / f"v{ARGO_VERSION}"


def controller_path() -> Path:
    return argo_dir() / "bin" / "workflow-controller"


def lint_path() -> Path:
    return argo_dir() / "bin" / "argo-lint"


def crds_dir() -> Path:
    """Argo's full CRDs (with schemas), copied from the module at build time."""
    return argo_dir() / "crds"


def is_cached() -> bool:
    return (
        controller_path().is_file()
        and lint_path().is_file()
        and (crds_dir() / "argoproj.io_workflows.yaml").is_file()
    )


HEALTH_LISTEN = 'http.ListenAndServe(":6060", nil)'
LOOPBACK_LISTEN = 'http.ListenAndServe("127.0.0.1:0", nil)'


def loopback_controller_main(upstream_main: str) -> str:
    """The controller's main package with its healthz/pprof server (upstream: every
    interface, port 6060) on an ephemeral loopback port: never reachable from off this
    machine, and two test controllers do not collide. Pure."""
    if upstream_main.count(HEALTH_LISTEN) != 1:
        raise RuntimeError(f"{ARGO_MODULE}/cmd/workflow-controller: {HEALTH_LISTEN} not found")
    return upstream_main.replace(HEALTH_LISTEN, LOOPBACK_LISTEN)


def write_wrapper(workdir: Path, controller_main: str) -> None:
    """The wrapper module: requires argo-workflows, holds argo-lint and the (patched)
    controller main package (it imports no internal package, so it builds from here)."""
    (workdir / "go.mod").write_text(
        f"module bertops.local/argo-workflows-build\n\ngo {GO_DIRECTIVE}\n\n"
        f"require {ARGO_MODULE} v{ARGO_VERSION}\n"
    )
    for name, text in (("argo-lint", LINT_MAIN), ("workflow-controller", controller_main)):
        (workdir / "cmd" / name).mkdir(parents=True, exist_ok=True)
        (workdir / "cmd" / name / "main.go").write_text(text)


def build(go: str, bin_dir: Path, progress: Progress) -> None:
    info = module_info(go, ARGO_MODULE, ARGO_VERSION, progress, go_directive=GO_DIRECTIVE)
    module_dir = Path(info["Dir"])
    with tempfile.TemporaryDirectory(prefix="bertops-argo-workflows-") as tmp:
        workdir = Path(tmp)
        upstream_main = (module_dir / "cmd" / "workflow-controller" / "main.go").read_text()
        write_wrapper(workdir, loopback_controller_main(upstream_main))
        compile_packages(
            go,
            workdir,
            f"{bin_dir}/",
            ["./cmd/argo-lint", "./cmd/workflow-controller"],
            progress,
            f"compile workflow-controller and argo-lint v{ARGO_VERSION} (minutes on 2 cores)",
            nice=True,
        )
        crds = crds_dir()
        crds.mkdir(parents=True, exist_ok=True)
        for crd in sorted((module_dir / "manifests" / "base" / "crds" / "full").glob("*.yaml")):
            if crd.name != "kustomization.yaml":
                (crds / crd.name).write_text(crd.read_text())


def ensure_argo_workflows(progress: Progress = say, *, rebuild: bool = False) -> Path:
    """The cache folder holding bin/ and crds/, building them first when missing."""
    if not rebuild and is_cached():
        return argo_dir()
    started = time.monotonic()
    partial = argo_dir() / ".bin.partial"
    partial.mkdir(parents=True, exist_ok=True)
    build(find_go(), partial, progress)
    target = controller_path().parent
    target.mkdir(parents=True, exist_ok=True)
    for name in ("workflow-controller", "argo-lint"):
        (partial / name).replace(target / name)
    partial.rmdir()
    progress(
        f"argo-workflows v{ARGO_VERSION} ready in {argo_dir()} ({time.monotonic() - started:.0f}s)"
    )
    return argo_dir()


if __name__ == "__main__":
    ensure_argo_workflows(rebuild="--rebuild" in sys.argv[1:])
