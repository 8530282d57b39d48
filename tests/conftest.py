"""Shared pytest fixtures: one real embedded control plane per test session (a
kube-apiserver + etcd built from source, see bertops.cluster.controlplane) and a fresh
namespace per test. Only tests that ask for ``cluster``/``kube``/``namespace`` start it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def say_to_terminal(request: pytest.FixtureRequest, line: str) -> None:
    """Write a line to the terminal even while pytest captures output (a fixture's print
    is only shown when its test fails), so every CI log carries it."""
    plugins = request.config.pluginmanager
    terminal = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    if terminal is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        terminal.write_line("")
        terminal.write_line(line)


@pytest.fixture(scope="session")
def bertops_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Clusters started by tests live in a temporary BERTOPS_HOME, never the user's."""
    home = tmp_path_factory.mktemp("bertops-home")
    previous = os.environ.get("BERTOPS_HOME")
    os.environ["BERTOPS_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("BERTOPS_HOME", None)
    else:
        os.environ["BERTOPS_HOME"] = previous


@pytest.fixture(scope="session")
def cluster(bertops_home: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    from bertops.cluster.controlplane import Cluster, ClusterError

    handle = Cluster(f"pytest-{os.getpid()}")
    try:
        handle.up()
    except ClusterError as error:
        # Once, a start on a busy CI machine saw kube-apiserver die with an empty log, and
        # the cached fixture error failed every integration test after it. Try once more;
        # the first error goes to the terminal so it is never hidden.
        say_to_terminal(request, f"[tests] first control-plane start failed: {error}")
        handle.up()
    yield handle
    handle.down(purge=True)


@pytest.fixture(scope="session")
def kube(cluster):  # type: ignore[no-untyped-def]
    """A kubernetes ApiClient bound to the session cluster."""
    from kubernetes import config

    api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    yield api_client
    api_client.close()


@pytest.fixture
def namespace(kube) -> str:  # type: ignore[no-untyped-def]
    """A fresh namespace per test (no namespace controller here, so it is not deleted)."""
    from kubernetes import client

    name = f"t-{uuid.uuid4().hex[:10]}"
    client.CoreV1Api(kube).create_namespace(client.V1Namespace(metadata={"name": name}))
    return name
