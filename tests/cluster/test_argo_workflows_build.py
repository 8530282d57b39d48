"""The Argo Workflows build (pure parts): the controller's only all-interfaces listener is
moved to loopback, and the wrapper module holds both programs at the pinned version."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertops.cluster.argo_workflows import build


def test_controller_health_server_moves_to_loopback() -> None:
    upstream = 'go func() {\n\tlog.Error(ctx, http.ListenAndServe(":6060", nil).Error())\n}()'
    patched = build.loopback_controller_main(upstream)
    assert 'http.ListenAndServe("127.0.0.1:0", nil)' in patched and ":6060" not in patched


def test_unexpected_upstream_main_is_refused() -> None:
    with pytest.raises(RuntimeError, match="not found"):
        build.loopback_controller_main("package main\n")


def test_wrapper_module(tmp_path: Path) -> None:
    build.write_wrapper(tmp_path, "package main\n")
    assert f"require {build.ARGO_MODULE} v{build.ARGO_VERSION}" in (tmp_path / "go.mod").read_text()
    lint = (tmp_path / "cmd" / "argo-lint" / "main.go").read_text()
    assert f'"{build.ARGO_MODULE}/cmd/argo/lint"' in lint and "Offline: true" in lint
    assert (tmp_path / "cmd" / "workflow-controller" / "main.go").read_text() == "package main\n"


def test_cache_is_versioned() -> None:
    assert build.argo_dir().name == f"v{build.ARGO_VERSION}"
    assert build.controller_path().parent == build.lint_path().parent == build.argo_dir() / "bin"
