"""Builds the node binaries from their Go modules into a versioned cache.

kubelet, kube-controller-manager, kube-scheduler, kube-proxy and kubectl come from
``k8s.io/kubernetes`` at the control plane's version (so kubectl matches the API server):
one wrapper module imports all five ``cmd/...`` packages and one ``go build -o DIR/``
compiles them, with the staging-module ``replace`` lines and version stamp of
:mod:`bertops.cluster.controlplane.build`, whose helpers this module reuses. CoreDNS comes
from ``github.com/coredns/coredns`` (its main package is the module root), a static build.
Everything lands in ``~/.cache/bertops/node/k8s-v<k8s>_coredns-v<coredns>/bin`` ($BERTOPS_CACHE
overrides); each binary is built to a partial name and renamed, so an interrupted build
leaves nothing that looks finished. A cached build is reused without touching the network.

Called by ``bertops cluster build --node`` (``make node``) and ``bertops cluster env``
(which puts the cached kubectl on PATH).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import astuple, dataclass
from pathlib import Path

from bertops.cluster.gomod import Progress, compile_packages, module_info
from bertops.cluster.kubernetes_source import (
    GO_DIRECTIVE,
    KUBERNETES_VERSION,
    cache_root,
    find_go,
    say,
    staging_replaces,
    version_ldflags,
    wrapper_module,
)

# The CoreDNS release kubeadm v1.35 deploys (cmd/kubeadm/app/constants CoreDNSVersion).
COREDNS_VERSION = "1.13.1"
COREDNS_MODULE = "github.com/coredns/coredns"
# The binaries built from k8s.io/kubernetes, named as `go build` names them (the last
# element of k8s.io/kubernetes/cmd/<name>).
KUBERNETES_COMMANDS = (
    "kubelet",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
    "kubectl",
)


@dataclass(frozen=True)
class NodeBinaries:
    kubelet: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kube_proxy: Path
    kubectl: Path
    coredns: Path

    @property
    def versions(self) -> dict[str, str]:
        return {"kubernetes": KUBERNETES_VERSION, "coredns": COREDNS_VERSION}

    def paths(self) -> list[Path]:
        return list(astuple(self))


def node_bin_dir() -> Path:
    return cache_root() / "node" / f"k8s-v{KUBERNETES_VERSION}_coredns-v{COREDNS_VERSION}" / "bin"


def node_binaries_in(directory: Path) -> NodeBinaries:
    """Where each binary lives in directory (whether or not it is there yet). Pure."""
    return NodeBinaries(*(directory / name for name in (*KUBERNETES_COMMANDS, "coredns")))


def cached_node_binaries() -> NodeBinaries | None:
    """The cached build, or None when any binary is missing."""
    found = node_binaries_in(node_bin_dir())
    return found if all(path.is_file() for path in found.paths()) else None


def kubernetes_packages() -> list[str]:
    return [f"k8s.io/kubernetes/cmd/{name}" for name in KUBERNETES_COMMANDS]


def build_kubernetes_commands(go: str, directory: Path, progress: Progress) -> None:
    """Compile the five k8s.io/kubernetes commands in one `go build` into a partial folder
    inside directory, then rename each binary into directory."""
    info = module_info(
        go, "k8s.io/kubernetes", KUBERNETES_VERSION, progress, go_directive=GO_DIRECTIVE
    )
    upstream = Path(info["GoMod"]).read_text()
    partial = directory / ".kubernetes.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    with tempfile.TemporaryDirectory(prefix="bertops-node-") as tmp:
        workdir = Path(tmp)
        wrapper_module(
            workdir,
            "node-build",
            f"k8s.io/kubernetes v{KUBERNETES_VERSION}",
            staging_replaces(upstream, KUBERNETES_VERSION),
            kubernetes_packages(),
        )
        compile_packages(
            go,
            workdir,
            f"{partial}/",
            kubernetes_packages(),
            progress,
            f"compile {', '.join(KUBERNETES_COMMANDS)} v{KUBERNETES_VERSION} (minutes)",
            ldflags=version_ldflags(),
            nice=True,
        )
    for name in KUBERNETES_COMMANDS:
        (partial / name).replace(directory / name)
    partial.rmdir()


def build_coredns(go: str, directory: Path, progress: Progress) -> None:
    """Compile CoreDNS (its module root is the main package) to a partial name, then rename."""
    partial = directory / ".coredns.partial"
    with tempfile.TemporaryDirectory(prefix="bertops-coredns-") as tmp:
        workdir = Path(tmp)
        wrapper_module(
            workdir,
            "coredns-build",
            f"{COREDNS_MODULE} v{COREDNS_VERSION}",
            [],
            COREDNS_MODULE,
        )
        compile_packages(
            go,
            workdir,
            partial,
            [COREDNS_MODULE],
            progress,
            f"compile coredns v{COREDNS_VERSION}",
            nice=True,
        )
    partial.replace(directory / "coredns")


def ensure_node_binaries(progress: Progress = say, *, rebuild: bool = False) -> NodeBinaries:
    """The cached node binaries, building whatever is missing first (all of them when
    rebuild)."""
    if not rebuild and (found := cached_node_binaries()):
        return found
    go = find_go()
    directory = node_bin_dir()
    directory.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    expected = node_binaries_in(directory)
    if rebuild or not expected.coredns.is_file():
        build_coredns(go, directory, progress)
    kubernetes = [directory / name for name in KUBERNETES_COMMANDS]
    if rebuild or not all(path.is_file() for path in kubernetes):
        build_kubernetes_commands(go, directory, progress)
    progress(f"node binaries ready in {directory} ({time.monotonic() - started:.0f}s)")
    found = cached_node_binaries()
    assert found is not None
    return found


if __name__ == "__main__":
    for path in ensure_node_binaries().paths():
        print(path)
