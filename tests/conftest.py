"""Shared pytest fixtures: one real embedded control plane per test session (a
kube-apiserver + etcd built from source, see bertops.cluster.controlplane) and a fresh
namespace per test. Only tests that ask for ``cluster``/``kube``/``namespace`` start it.

``make test`` runs the suite on two pytest-xdist workers: much of
it waits on subprocesses, servers and pods, so one core idles in a serial run. Each
module is one group, so its module fixtures start once; modules that share an expensive
session fixture form one group (:data:`SHARED_GROUPS`), and the longest groups are
handed out first (:data:`LONGEST_FIRST`) so that no worker ends long after the
others. Each worker has its own control plane and BERTOPS_HOME.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from bertops.cluster.controlplane import Cluster
    from bertops.cluster.storage.run import Storage

WORKER_LINES = "bertops-terminal-lines"  # say_to_terminal's lines from an xdist worker
# Directories or modules whose tests share a session fixture worth starting only once.
SHARED_GROUPS = {
    "tests/trainer/": "trained-model",  # the tiny trained model (tests.trainer.conftest)
    "tests/compress/": "trained-model",  # re-exports the same fixtures
    "tests/monitor/": "monitor",
    "tests/server/": "server",
    "tests/operator/test_argo_": "argo",  # Argo's workflow controller (minutes to start)
    # One node at a time: a second node beside the first could not share the image store.
    "tests/node/": "node",
}
# The longest groups (about 4 min, 1.5 min, ...), first in the queue.
LONGEST_FIRST = (
    "node",
    "argo",
    "tests/operator/test_s3_chain.py",
    "tests/operator/test_deployment_local.py",
    "tests/operator/test_deployment_judgment.py",
    "tests/operator/test_drift_loop.py",
    "tests/operator/test_local_runtime.py",
    "tests/operator/test_lifecycle.py",
    "trained-model",
    "server",
)


def xdist_group_of(path: str) -> str:
    """The xdist group of a test module (its path relative to the checkout)."""
    for prefix, group in SHARED_GROUPS.items():
        if path.startswith(prefix):
            return group
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put the longest groups first (the same order on every worker, as xdist needs)."""
    root = config.rootpath

    def rank(item: pytest.Item) -> int:
        group = xdist_group_of(str(item.path.relative_to(root)))
        for position, prefix in enumerate(LONGEST_FIRST):
            if group.startswith(prefix):
                return position
        return len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the collection order within each rank


def _group_scheduling(config: pytest.Config, log: object) -> object:
    """xdist's scope scheduling with our groups as scopes: each group goes to one worker
    whole, in collection order. (``--dist loadgroup`` with ``xdist_group`` marks would
    say the same, but pytest-xdist 3.8 cannot rename pytest 9's node ids, so its marks
    have no effect.)"""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group_of(nodeid.split("::", 1)[0])

    return GroupScheduling(config, log)


def say_to_terminal(request: pytest.FixtureRequest, line: str) -> None:
    """Write a line to the terminal even while pytest captures output (a fixture's print
    is only shown when its test fails), so every CI log carries it. An xdist worker has
    no terminal: its lines go to the controller, which prints them as the worker ends."""
    config = request.config
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput.setdefault(WORKER_LINES, []).append(line)
        return
    _write_line(config, line)


def _write_line(config: pytest.Config, line: str) -> None:
    plugins = config.pluginmanager
    terminal = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    if terminal is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        terminal.write_line("")
        terminal.write_line(line)


def _print_worker_lines(node: Any, error: object) -> None:
    """xdist's hook as a worker ends: the lines it could not print itself."""
    for line in getattr(node, "workeroutput", {}).get(WORKER_LINES, []):
        _write_line(node.config, line)


# xdist's hooks exist only where xdist does: pytest refuses a conftest with an unknown hook,
# and a venv without the dev extra (tests/cluster/test_torch_free_install.py) has none.
if importlib.util.find_spec("xdist") is not None:
    pytest_xdist_make_scheduler = _group_scheduling
    pytest_testnodedown = _print_worker_lines


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
def s3_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storage]:
    """A real S3 server (VersityGW on loopback) for this test process, its bucket made."""
    from bertops.cluster.storage.run import Storage

    storage = Storage(tmp_path_factory.mktemp("s3"))
    storage.up()
    try:
        yield storage
    finally:
        storage.down()


@pytest.fixture
def s3_env(s3_store: Storage, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The S3 client environment in os.environ for one test (the operator's steps and
    servers inherit it, as they would in a pod from the artifact-store Secret)."""
    env = s3_store.client_env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture(scope="session")
def cluster(bertops_home: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
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
def kube(cluster: Cluster) -> Iterator[ApiClient]:
    """A kubernetes ApiClient bound to the session cluster."""
    from kubernetes import config

    api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    yield api_client
    api_client.close()


@pytest.fixture
def namespace(kube: ApiClient) -> str:
    """A fresh namespace per test (no namespace controller here, so it is not deleted)."""
    from kubernetes import client

    name = f"t-{uuid.uuid4().hex[:10]}"
    client.CoreV1Api(kube).create_namespace(client.V1Namespace(metadata={"name": name}))
    return name
