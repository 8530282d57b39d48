"""Builds the ``argocd`` binary from the ``github.com/argoproj/argo-cd/v3`` Go module into
the same versioned cache as the control plane (``~/.cache/bertops/argocd/v<version>``).

The upstream go.mod points ``gitops-engine`` at a local folder and pins every ``k8s.io/*``
module through a ``replace`` block; a wrapper module that requires argo-cd copies that
block (derived from the downloaded go.mod, so a version bump needs no hand-kept list) and
replaces the local gitops-engine with its published module. argo-cd 3.6 says ``go
1.27.0``, so the build asks for a newer toolchain through ``GOTOOLCHAIN`` (fetched from the
module proxy). One binary serves every role; it picks its role from ``ARGOCD_BINARY_NAME``.
The CRDs are read from the module's ``manifests/crds``.

Called by ``bertops cluster argocd build`` and :mod:`bertops.cluster.argocd.run`.
"""

from __future__ import annotations

import re
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bertops.cluster.gomod import Progress, compile_packages, module_info
from bertops.cluster.kubernetes_source import cache_root, find_go, say

ARGOCD_VERSION = "3.6.1"
ARGOCD_MODULE = "github.com/argoproj/argo-cd/v3"
GITOPS_ENGINE = "github.com/argoproj/argo-cd/gitops-engine/v3"
GO_TOOLCHAIN = "go1.27.3"
GO_DIRECTIVE = "1.27.0"


def argocd_dir() -> Path:
    return cache_root() / "argocd" / f"v{ARGOCD_VERSION}"


def binary_path() -> Path:
    return argocd_dir() / "bin" / "argocd"


def crds_dir() -> Path:
    """Argo CD's CRDs, copied from the module at build time."""
    return argocd_dir() / "crds"


# Upstream's image puts this script on the repo-server's PATH; the repo-server runs it
# for every manifest generation (commit signature check), so it is installed beside argocd.
VERIFY_WRAPPER = "git-verify-wrapper.sh"


def _module_files_present() -> bool:
    bin_dir = binary_path().parent
    return (crds_dir() / "application-crd.yaml").is_file() and (bin_dir / VERIFY_WRAPPER).is_file()


def cached_binary() -> Path | None:
    found = binary_path()
    return found if found.is_file() and _module_files_present() else None


def upstream_replaces(argocd_go_mod: str) -> list[str]:
    """The wrapper's ``replace`` lines: argo-cd's own block, minus local paths, plus the
    published gitops-engine at the same version. Pure (reads go.mod text)."""
    block = re.search(r"^replace \($(.*?)^\)", argocd_go_mod, re.M | re.S)
    if block is None:
        raise RuntimeError(f"no replace block in {ARGOCD_MODULE} go.mod")
    lines = []
    for raw in block.group(1).splitlines():
        line = raw.split("//", 1)[0].strip()
        if "=>" in line and not line.split("=>", 1)[1].strip().startswith("."):
            lines.append(f"\t{line}")
    lines.append(f"\t{GITOPS_ENGINE} => {GITOPS_ENGINE} v{ARGOCD_VERSION}")
    return lines


def version_ldflags(now: datetime | None = None) -> str:
    """Stamp the release as upstream's Makefile does (else `version` says v99.99.99)."""
    package = f"{ARGOCD_MODULE}/common"
    date = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return " ".join(
        [
            f"-X {package}.version={ARGOCD_VERSION}",
            f"-X {package}.buildDate={date}",
            f"-X {package}.gitTag=v{ARGOCD_VERSION}",
            f"-X {package}.gitTreeState=clean",
        ]
    )


def _write_wrapper(workdir: Path, replaces: list[str]) -> None:
    lines = [
        "module bertops.local/argocd-build",
        "",
        f"go {GO_DIRECTIVE}",
        "",
        f"require {ARGOCD_MODULE} v{ARGOCD_VERSION}",
        "",
        "replace (",
        *replaces,
        ")",
    ]
    (workdir / "go.mod").write_text("\n".join(lines) + "\n")
    (workdir / "tools.go").write_text(
        f'//go:build tools\n\npackage tools\n\nimport _ "{ARGOCD_MODULE}/cmd"\n'
    )


def _info(go: str, progress: Progress) -> dict[str, Any]:
    return module_info(
        go,
        ARGOCD_MODULE,
        ARGOCD_VERSION,
        progress,
        go_directive=GO_DIRECTIVE,
        toolchain=GO_TOOLCHAIN,
    )


def build_argocd(go: str, target: Path, progress: Progress) -> None:
    info = _info(go, progress)
    with tempfile.TemporaryDirectory(prefix="bertops-argocd-") as tmp:
        workdir = Path(tmp)
        _write_wrapper(workdir, upstream_replaces(Path(info["GoMod"]).read_text()))
        compile_packages(
            go,
            workdir,
            target,
            [f"{ARGOCD_MODULE}/cmd"],
            progress,
            f"compile argocd v{ARGOCD_VERSION} (about 8 minutes on 2 cores)",
            ldflags=version_ldflags(),
            toolchain=GO_TOOLCHAIN,
        )
    install_module_files(Path(info["Dir"]))


def install_module_files(module_dir: Path) -> None:
    """Argo CD's CRDs and the repo-server's commit-verify script, from the module."""
    crds = crds_dir()
    crds.mkdir(parents=True, exist_ok=True)
    for crd in sorted((module_dir / "manifests" / "crds").glob("*-crd.yaml")):
        (crds / crd.name).write_text(crd.read_text())
    wrapper = binary_path().parent / VERIFY_WRAPPER
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text((module_dir / "hack" / VERIFY_WRAPPER).read_text())
    wrapper.chmod(0o755)


def ensure_argocd(progress: Progress = say, *, rebuild: bool = False) -> Path:
    """The cached argocd binary, building it first when missing."""
    if not rebuild and (found := cached_binary()):
        return found
    if not rebuild and binary_path().is_file():  # built by an older bertops: add the files
        install_module_files(Path(_info(find_go(), progress)["Dir"]))
        return binary_path()
    target = binary_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / ".argocd.partial"
    started = time.monotonic()
    build_argocd(find_go(), partial, progress)
    partial.replace(target)
    progress(f"argocd v{ARGOCD_VERSION} ready in {target} ({time.monotonic() - started:.0f}s)")
    return target
