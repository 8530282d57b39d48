"""The node-binary build (pure parts and cache logic): the wrapper module imports every
command it builds, the cache folder is named by both versions, a missing binary means "not
cached", and only what is missing gets built. No Go and no network: builders are faked."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bertops.cli.main import app
from bertops.cluster import kubernetes_source
from bertops.cluster.node import build


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BERTOPS_CACHE", str(tmp_path))
    return tmp_path


def fill(directory: Path, names: tuple[str, ...]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_text("#!/bin/sh\n")


def test_wrapper_imports_several_packages(tmp_path: Path) -> None:
    replaces = kubernetes_source.staging_replaces(
        "replace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n)\n", "1.35.4"
    )
    kubernetes_source.wrapper_module(
        tmp_path, "node-build", "k8s.io/kubernetes v1.35.4", replaces, build.kubernetes_packages()
    )
    go_mod = (tmp_path / "go.mod").read_text()
    assert go_mod.startswith("module bertops.local/node-build\n")
    assert "require k8s.io/kubernetes v1.35.4" in go_mod
    assert "\tk8s.io/api => k8s.io/api v0.35.4\n" in go_mod
    tools = (tmp_path / "tools.go").read_text()
    assert tools.startswith("//go:build tools\n\npackage tools\n\nimport (\n")
    for name in build.KUBERNETES_COMMANDS:
        assert f'\t_ "k8s.io/kubernetes/cmd/{name}"\n' in tools
    assert tools.endswith(")\n")


def test_wrapper_with_one_import_is_unchanged(tmp_path: Path) -> None:
    kubernetes_source.wrapper_module(tmp_path, "coredns-build", "m v1", [], build.COREDNS_MODULE)
    tools = (tmp_path / "tools.go").read_text()
    assert tools == f'//go:build tools\n\npackage tools\n\nimport _ "{build.COREDNS_MODULE}"\n'
    assert "replace" not in (tmp_path / "go.mod").read_text()


def test_cache_folder_names_both_versions(cache: Path) -> None:
    expected = f"k8s-v{build.KUBERNETES_VERSION}_coredns-v{build.COREDNS_VERSION}"
    assert build.node_bin_dir() == cache / "node" / expected / "bin"


def test_binaries_are_named_as_go_build_names_them(tmp_path: Path) -> None:
    found = build.node_binaries_in(tmp_path)
    assert found.kube_controller_manager == tmp_path / "kube-controller-manager"
    assert found.coredns == tmp_path / "coredns"
    assert [path.name for path in found.paths()] == [*build.KUBERNETES_COMMANDS, "coredns"]
    assert found.versions == {"kubernetes": "1.35.4", "coredns": build.COREDNS_VERSION}


def test_a_missing_binary_means_not_cached(cache: Path) -> None:
    assert build.cached_node_binaries() is None
    fill(build.node_bin_dir(), build.KUBERNETES_COMMANDS)
    assert build.cached_node_binaries() is None  # no coredns yet
    fill(build.node_bin_dir(), ("coredns",))
    found = build.cached_node_binaries()
    assert found is not None and found.kubectl.is_file()
    found.kube_proxy.unlink()
    assert build.cached_node_binaries() is None


def fake_builders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    built: list[str] = []

    def kubernetes(go: str, directory: Path, progress: build.Progress) -> None:
        built.append("kubernetes")
        fill(directory, build.KUBERNETES_COMMANDS)

    def coredns(go: str, directory: Path, progress: build.Progress) -> None:
        built.append("coredns")
        fill(directory, ("coredns",))

    monkeypatch.setattr(build, "find_go", lambda: "go")
    monkeypatch.setattr(build, "build_kubernetes_commands", kubernetes)
    monkeypatch.setattr(build, "build_coredns", coredns)
    return built


def test_ensure_builds_only_what_is_missing(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = fake_builders(monkeypatch)
    fill(build.node_bin_dir(), ("coredns",))
    found = build.ensure_node_binaries(lambda _: None)
    assert built == ["kubernetes"] and found == build.cached_node_binaries()
    build.ensure_node_binaries(lambda _: None)
    assert built == ["kubernetes"]  # cached: nothing built, no Go looked for
    build.ensure_node_binaries(lambda _: None, rebuild=True)
    assert built == ["kubernetes", "coredns", "kubernetes"]


def test_cached_build_needs_no_go(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fill(build.node_bin_dir(), (*build.KUBERNETES_COMMANDS, "coredns"))

    def no_go() -> str:
        raise AssertionError("a cached build must not look for Go")

    monkeypatch.setattr(build, "find_go", no_go)
    assert build.ensure_node_binaries(lambda _: None) == build.cached_node_binaries()


@pytest.mark.parametrize("kubectl_on_path", [False, True])
def test_env_puts_the_cached_kubectl_on_path_only_when_none_is_there(
    cache: Path, monkeypatch: pytest.MonkeyPatch, kubectl_on_path: bool
) -> None:
    fill(build.node_bin_dir(), ("kubectl",))
    monkeypatch.setattr(
        "shutil.which", lambda name: "/usr/bin/kubectl" if kubectl_on_path else None
    )
    out = CliRunner().invoke(app, ["cluster", "env", "--name", "t"]).stdout
    assert out.startswith("export KUBECONFIG=")
    path_line = f"export PATH={build.node_bin_dir()}:$PATH\n"
    assert (path_line in out) is not kubectl_on_path


def test_env_without_a_cached_kubectl(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    out = CliRunner().invoke(app, ["cluster", "env", "--name", "t"]).stdout
    assert "PATH" not in out
