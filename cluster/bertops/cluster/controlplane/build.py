"""Builds kube-apiserver and etcd from their Go modules into a versioned cache.

kube-apiserver lives in ``k8s.io/kubernetes``, whose go.mod points every ``k8s.io/*``
staging module at a local folder; a wrapper module that requires it must replace each of
those with the matching published ``v0.x`` release, which this module derives from the
upstream go.mod itself (so a version bump needs no hand-kept list). etcd builds from
``go.etcd.io/etcd/server/v3``. The cache key is the pair of versions; a cached build is
reused without touching the network.

Called by :class:`bertops.cluster.controlplane.cluster.Cluster` and ``bertops cluster build``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
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

# The etcd release kube-apiserver 1.35 is built and tested against (its go.mod's client).
ETCD_VERSION = "3.6.5"


@dataclass(frozen=True)
class Binaries:
    kube_apiserver: Path
    etcd: Path

    @property
    def versions(self) -> dict[str, str]:
        return {"kubernetes": KUBERNETES_VERSION, "etcd": ETCD_VERSION}


def bin_dir() -> Path:
    return cache_root() / "controlplane" / f"k8s-v{KUBERNETES_VERSION}_etcd-v{ETCD_VERSION}" / "bin"


def cached_binaries() -> Binaries | None:
    """The cached build, or None when any binary is missing."""
    directory = bin_dir()
    found = Binaries(directory / "kube-apiserver", directory / "etcd")
    if found.kube_apiserver.is_file() and found.etcd.is_file():
        return found
    return None


def build_kube_apiserver(go: str, target: Path, progress: Progress) -> None:
    info = module_info(
        go, "k8s.io/kubernetes", KUBERNETES_VERSION, progress, go_directive=GO_DIRECTIVE
    )
    upstream = Path(info["GoMod"]).read_text()
    with tempfile.TemporaryDirectory(prefix="bertops-kube-apiserver-") as tmp:
        workdir = Path(tmp)
        wrapper_module(
            workdir,
            "kube-apiserver-build",
            f"k8s.io/kubernetes v{KUBERNETES_VERSION}",
            staging_replaces(upstream, KUBERNETES_VERSION),
            "k8s.io/kubernetes/cmd/kube-apiserver",
        )
        compile_packages(
            go,
            workdir,
            target,
            ["k8s.io/kubernetes/cmd/kube-apiserver"],
            progress,
            f"compile kube-apiserver v{KUBERNETES_VERSION} (minutes)",
            ldflags=version_ldflags(),
        )


def build_etcd(go: str, target: Path, progress: Progress) -> None:
    with tempfile.TemporaryDirectory(prefix="bertops-etcd-") as tmp:
        workdir = Path(tmp)
        wrapper_module(
            workdir,
            "etcd-build",
            f"go.etcd.io/etcd/server/v3 v{ETCD_VERSION}",
            [],
            "go.etcd.io/etcd/server/v3",
        )
        compile_packages(
            go,
            workdir,
            target,
            ["go.etcd.io/etcd/server/v3"],
            progress,
            f"compile etcd v{ETCD_VERSION}",
        )


KUBE_URL = "https://dl.k8s.io/v{version}/bin/linux/{arch}/kube-apiserver"
ETCD_URL = "https://github.com/etcd-io/etcd/releases/download/v{version}/etcd-v{version}-linux-{arch}.tar.gz"
# The etcd release's SHA256SUMS lines for the Linux tarballs, pinned in code: a download
# is checked against what this version of bertops was written for, not against a sums
# file fetched from the same place as the tarball. Bumping ETCD_VERSION needs a new entry.
ETCD_SHA256 = {
    ("3.6.5", "amd64"): "66bad39ed920f6fc15fd74adcb8bfd38ba9a6412f8c7852d09eb11670e88cac3",
    ("3.6.5", "arm64"): "7010161787077b07de29b15b76825ceacbbcedcb77fe2e6832f509be102cab6b",
}


class ChecksumError(RuntimeError):
    """A downloaded file is not the pinned release; nothing was installed from it."""


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def install_etcd_archive(archive: Path, directory: Path, arch: str) -> Path:
    """Verify an etcd release tarball against the pinned sha256, then install its etcd
    binary into directory; refuse (ChecksumError) before extracting anything otherwise."""
    import tarfile

    expected = ETCD_SHA256.get((ETCD_VERSION, arch))
    if expected is None:
        raise ChecksumError(f"no pinned sha256 for etcd v{ETCD_VERSION} linux-{arch}")
    actual = _sha256(archive)
    if actual != expected:
        raise ChecksumError(
            f"etcd v{ETCD_VERSION} linux-{arch} tarball {archive} has sha256 {actual}, "
            f"expected the release's {expected}: refusing to install it"
        )
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(archive) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith("/etcd")), None)
        if member is None:
            raise RuntimeError(f"{archive} holds no etcd binary")
        member.name = "etcd"
        tar.extract(member, tmp, filter="data")
        partial = directory / ".etcd.partial"
        shutil.copy(Path(tmp) / "etcd", partial)
    partial.chmod(0o755)
    return partial.replace(directory / "etcd")


def download_release(progress: Progress = say) -> Binaries:
    """Fetch the official release binaries instead of building (where the network allows;
    not on the isolated build machines this project is developed on). kube-apiserver is
    checked against its published sha256, etcd against the sha256 pinned above."""
    import hashlib
    import platform
    import urllib.request

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine())
    if arch is None:
        raise RuntimeError(f"no release binaries for {platform.machine()}: build instead")
    directory = bin_dir()
    directory.mkdir(parents=True, exist_ok=True)
    url = KUBE_URL.format(version=KUBERNETES_VERSION, arch=arch)
    progress(f"download {url}")
    with urllib.request.urlopen(url, timeout=300) as response:
        data = response.read()
    with urllib.request.urlopen(url + ".sha256", timeout=60) as response:
        expected = response.read().decode().split()[0]
    if hashlib.sha256(data).hexdigest() != expected:
        raise RuntimeError(f"sha256 mismatch for {url}")
    partial = directory / ".kube-apiserver.partial"
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.replace(directory / "kube-apiserver")
    url = ETCD_URL.format(version=ETCD_VERSION, arch=arch)
    progress(f"download {url}")
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "etcd.tar.gz"
        urllib.request.urlretrieve(url, archive)
        install_etcd_archive(archive, directory, arch)
    found = cached_binaries()
    assert found is not None
    return found


def ensure_binaries(
    progress: Progress = say, *, rebuild: bool = False, download: bool = False
) -> Binaries:
    """The cached binaries, building (or downloading) whatever is missing first."""
    if not rebuild and (found := cached_binaries()):
        return found
    if download:
        return download_release(progress)
    go = find_go()
    directory = bin_dir()
    directory.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    for name, builder in (("kube-apiserver", build_kube_apiserver), ("etcd", build_etcd)):
        final = directory / name
        if final.is_file() and not rebuild:
            continue
        # Build beside the target and rename, so an interrupted build leaves no binary.
        partial = directory / f".{name}.partial"
        builder(go, partial, progress)
        partial.replace(final)
    progress(f"control plane ready in {bin_dir()} ({time.monotonic() - started:.0f}s)")
    found = cached_binaries()
    assert found is not None
    return found
