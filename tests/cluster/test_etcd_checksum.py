"""`bertops cluster build --download` installs an etcd tarball only when its sha256 is the
release's, pinned in code per version and architecture; no network is used here: the
"downloads" are local files."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from bertops.cluster.controlplane import build
from bertops.cluster.controlplane.build import ChecksumError, install_etcd_archive

FAKE_ETCD = b"#!/bin/sh\necho not really etcd\n"


def fake_release(path: Path) -> Path:
    """A tarball laid out like the release's (etcd-vX-linux-ARCH/etcd), with other bytes."""
    folder = f"etcd-v{build.ETCD_VERSION}-linux-amd64"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(f"{folder}/etcd")
        info.size, info.mode = len(FAKE_ETCD), 0o755
        tar.addfile(info, io.BytesIO(FAKE_ETCD))
    return path


def test_pins_cover_the_built_version() -> None:
    for arch in ("amd64", "arm64"):
        pinned = build.ETCD_SHA256[(build.ETCD_VERSION, arch)]
        assert len(pinned) == 64
        assert int(pinned, 16) >= 0


def test_mismatching_tarball_is_refused_before_extraction(tmp_path: Path) -> None:
    archive = fake_release(tmp_path / "etcd.tar.gz")
    target = tmp_path / "bin"
    target.mkdir()
    with pytest.raises(ChecksumError, match="refusing to install"):
        install_etcd_archive(archive, target, "amd64")
    assert list(target.iterdir()) == []


def test_unpinned_architecture_is_refused(tmp_path: Path) -> None:
    archive = fake_release(tmp_path / "etcd.tar.gz")
    with pytest.raises(ChecksumError, match="no pinned sha256"):
        install_etcd_archive(archive, tmp_path, "riscv64")


def test_matching_tarball_installs_etcd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = fake_release(tmp_path / "etcd.tar.gz")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(build.ETCD_SHA256, (build.ETCD_VERSION, "amd64"), digest)
    target = tmp_path / "bin"
    target.mkdir()
    installed = install_etcd_archive(archive, target, "amd64")
    assert installed == target / "etcd"
    assert installed.read_bytes() == FAKE_ETCD
    assert installed.stat().st_mode & 0o111


def test_download_release_refuses_a_tampered_etcd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole --download path, its URLs answered from local bytes."""
    import urllib.request

    monkeypatch.setenv("BERTOPS_CACHE", str(tmp_path / "cache"))
    apiserver = b"kube-apiserver bytes"

    def urlopen(url: str, timeout: float = 0) -> io.BytesIO:
        if url.endswith(".sha256"):
            return io.BytesIO(hashlib.sha256(apiserver).hexdigest().encode())
        return io.BytesIO(apiserver)

    def urlretrieve(url: str, filename: Path) -> None:
        assert url.endswith(".tar.gz")
        fake_release(Path(filename))

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(urllib.request, "urlretrieve", urlretrieve)
    with pytest.raises(ChecksumError):
        build.download_release(lambda message: None)
    assert not (build.bin_dir() / "etcd").exists()
    assert build.cached_binaries() is None
