"""A cluster's secrets (keys, the system:masters token and tokens.csv, the kubeconfig) are
created 0600 in 0700 folders from the start: with the umask wide open and every later
chmod turned into a no-op, nothing under the cluster folder is readable by others."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from bertops.cluster.controlplane import Cluster
from bertops.cluster.controlplane.argv import apiserver_argv, etcd_argv
from bertops.cluster.controlplane.cluster import ClusterState
from bertops.cluster.files import private_dir, write_private


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 000: a file or folder created with default modes would be world-writable."""
    previous = os.umask(0)
    yield
    os.umask(previous)


@pytest.fixture
def no_late_chmod(monkeypatch: pytest.MonkeyPatch) -> None:
    """Creating wide and chmod'ing after (a window where others can read) is not enough."""
    monkeypatch.setattr(os, "chmod", lambda *args, **kwargs: None)
    monkeypatch.setattr(Path, "chmod", lambda *args, **kwargs: None)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.mark.usefixtures("open_umask", "no_late_chmod")
def test_cluster_secrets_are_private_from_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BERTOPS_HOME", str(tmp_path / "home"))
    cluster = Cluster("secrets")
    token = cluster._write_secrets()
    cluster._write_kubeconfig("https://127.0.0.1:6443", token)

    expected = {
        "token",
        "tokens.csv",
        "kubeconfig",
        "pki/ca.crt",
        "pki/server.key",
        "pki/sa.key",
        "pki/etcd/ca.crt",
        "pki/etcd/server.key",
        "pki/etcd/peer.key",
        "pki/etcd/apiserver-etcd-client.key",
    }
    found = {str(p.relative_to(cluster.directory)) for p in cluster.directory.rglob("*")}
    assert expected <= found
    assert token in (cluster.directory / "tokens.csv").read_text()
    for path in [cluster.directory, *cluster.directory.rglob("*")]:
        wanted = 0o700 if path.is_dir() else 0o600
        assert mode(path) == wanted, f"{path} is {oct(mode(path))}"
    # The folders bertops created above the cluster are private as well.
    assert mode(tmp_path / "home") == mode(tmp_path / "home" / "clusters") == 0o700
    assert not list(cluster.directory.rglob(".*.tmp")), "no temporary file left behind"


def test_tls_flags_name_the_generated_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """etcd requires client certificates from its CA, and kube-apiserver presents one."""
    monkeypatch.setenv("BERTOPS_HOME", str(tmp_path))
    cluster = Cluster("flags")
    cluster._write_secrets()
    state = ClusterState(name="flags", etcd_url="https://127.0.0.1:2379")
    etcd = etcd_argv(Path("etcd"), cluster.directory, state.etcd_url, 2380)
    apiserver = apiserver_argv(Path("kube-apiserver"), cluster.directory, state, 6443)
    assert "--client-cert-auth" in etcd and "--peer-client-cert-auth" in etcd
    assert not [flag for flag in etcd if "http://" in flag]
    assert "--etcd-servers=https://127.0.0.1:2379" in apiserver
    files = [flag.split("=", 1) for flag in etcd + apiserver if "file=" in flag]
    named = {name for name, _ in files}
    assert {
        "--cert-file",
        "--key-file",
        "--trusted-ca-file",
        "--etcd-cafile",
        "--etcd-certfile",
        "--etcd-keyfile",
    } <= named
    assert all(Path(path).is_file() for _, path in files), files


@pytest.mark.usefixtures("open_umask")
def test_write_private_replaces_a_wider_file_atomically(tmp_path: Path) -> None:
    target = tmp_path / "tokens.csv"
    target.write_text("old")
    target.chmod(0o644)  # as an older bertops left it
    write_private(target, "new")
    assert target.read_text() == "new"
    assert mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["tokens.csv"]


@pytest.mark.usefixtures("open_umask")
def test_private_dir_keeps_existing_parents_and_tightens_itself(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)  # a user's own folder: not ours to change
    existing = tmp_path / "cluster"
    existing.mkdir(mode=0o755)
    private_dir(existing)
    assert mode(existing) == 0o700
    private_dir(tmp_path / "a" / "b")
    assert mode(tmp_path / "a") == mode(tmp_path / "a" / "b") == 0o700
    assert mode(tmp_path) == 0o755
