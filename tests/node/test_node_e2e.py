"""The kubernetes runtime in real pods on a real node (bertops.cluster.node), the artifact
store on a hostPath volume: a step that exits 2 failing its Job at once, a deleted
BertTraining whose Job and pods the garbage collector removes, and a killed training pod
retried from its checkpoint. (The chain itself, dataset → 2-rank training → model →
compressed model → served, runs in pods with the store on S3: test_node_s3.py.) No
kubelet stand-in anywhere in this file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from bertops.operator.config import OperatorConfig
from bertops.operator.kube import Kube
from tests.operator.conftest import RunningOperator, delete_deployments
from tests.operator.test_local_runtime import TINY, dataset, training
from tests.waiting import condition_of as condition
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.e2e]
__all__ = ["tweets_csv"]
from tests.operator.test_local_runtime import tweets_csv  # noqa: E402  (module fixture)

STEP_UID = 1000  # the images' user, and the pods' runAsUser
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"


@pytest.fixture
def node_namespace(node_kube: Any) -> Iterator[str]:
    """A namespace per test, deleted afterwards: the node has 2 CPUs, and a test's pods
    left running would keep the next test's pods Pending."""
    import uuid

    name = f"e2e-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(node_kube)
    core.create_namespace(client.V1Namespace(metadata={"name": name}))
    core.create_namespaced_service_account(
        name, client.V1ServiceAccount(metadata={"name": "bertops-step"})
    )
    yield name
    core.delete_namespace(name)
    wait_for(
        lambda: not core.list_namespaced_pod(name).items,
        timeout=120,
        what=f"the pods of namespace {name} gone",
    )


@pytest.fixture
def artifacts(node_kube: Any, node_namespace: str, tmp_path: Path) -> Path:
    """The artifact store's root, as the operator sees it. The namespace's
    `bertops-artifacts` claim binds a hostPath PersistentVolume of its own folder of the
    store, ``<root>/<namespace>`` (as gitops/tenant says), which its pods mount at that
    same path."""
    root = tmp_path / "artifacts"
    tenant = root / node_namespace
    tenant.mkdir(parents=True)
    for folder in (tmp_path, root):
        folder.chmod(0o755)
    os.chown(tenant, STEP_UID, STEP_UID)
    core = client.CoreV1Api(node_kube)
    volume = f"artifacts-{node_namespace}"
    # Plain dict bodies, as the operator sends them: the client validates them into its models.
    persistent_volume: Any = {
        "metadata": {"name": volume},
        "spec": {
            "capacity": {"storage": "5Gi"},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": str(tenant), "type": "Directory"},
        },
    }
    core.create_persistent_volume(persistent_volume)
    claim: Any = {
        "metadata": {"name": "bertops-artifacts"},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": volume,
            "resources": {"requests": {"storage": "5Gi"}},
        },
    }
    core.create_namespaced_persistent_volume_claim(node_namespace, claim)
    return root


@pytest.fixture
def node_operator(
    node_cluster: Any, node_kube: Any, node_namespace: str, artifacts: Path, tmp_path: Path
) -> Iterator[RunningOperator]:
    config = OperatorConfig(
        namespaces=(node_namespace,),
        runtime="kubernetes",
        artifact_root=str(artifacts),
        artifact_mount=str(artifacts),
        allowed_uri_prefixes=(),  # the namespace's own part of the store, nothing else
        state_dir=tmp_path / "state",
        poll_seconds=1.0,
        step_retry_base_seconds=1.0,
    )
    operator = RunningOperator(config, str(node_cluster.kubeconfig))
    try:
        yield operator
        # While the operator runs, so its finalizer lets the deployments go.
        delete_deployments(node_kube, {node_namespace})
    finally:
        operator.stop()


def shared_csv(tweets_csv: Path, artifacts: Path, namespace: str) -> Path:
    data = artifacts / namespace / "data"
    data.mkdir(exist_ok=True)
    target = data / "tweets.csv"
    target.write_bytes(tweets_csv.read_bytes())
    for path in (data, target):
        os.chown(path, STEP_UID, STEP_UID)
    return target


def reason(kube: Kube, kind: str, namespace: str, name: str, type_: str = "Ready") -> str | None:
    found = condition(kube.get(kind, namespace, name), type_)
    return found["reason"] if found else None


def start_training(kube: Kube, ns: str, csv: Path, epochs: int, replicas: int = 1) -> None:
    """The example dataset and a tiny training of it; half a CPU per rank, so two ranks
    and the step that follows fit on the 2-CPU node together."""
    kube.create(dataset(ns, csv))
    spec = training(ns, epochs=epochs, base={"config": TINY})
    spec["spec"]["replicas"] = replicas
    spec["spec"]["resources"] = {"cpu": "500m", "memory": "2Gi"}
    kube.create(spec)


def name_of(job: client.V1Job) -> str:
    """The name the API server gave (the client's models type every field Optional)."""
    assert job.metadata is not None and job.metadata.name is not None
    return job.metadata.name


def pods(node_kube: Any, namespace: str) -> list[Any]:
    return list(client.CoreV1Api(node_kube).list_namespaced_pod(namespace).items)


def test_a_step_that_exits_2_fails_its_job_at_once(
    node_kube: Any,
    node_namespace: str,
    node_operator: RunningOperator,
    artifacts: Path,
    tweets_csv: Path,
) -> None:
    kube = Kube(node_kube)
    ns = node_namespace
    kube.create(dataset(ns, shared_csv(tweets_csv, artifacts, ns), labelColumn="no-such-column"))
    found = wait_for(
        lambda: (
            (c := condition(kube.get("BertDataset", ns, "tweets"), "Ready"))
            and c["status"] == "False"
            and c["reason"] not in ("Pending", "Running", "Preparing")
            and c
        ),
        timeout=300,
        what="the dataset failed",
    )
    assert found["reason"] == "InvalidData", found
    assert "no-such-column" in found["message"], found
    jobs = client.BatchV1Api(node_kube).list_namespaced_job(ns).items
    assert len(jobs) == 1 and jobs[0].status is not None and jobs[0].status.failed == 1, [
        j.status for j in jobs
    ]
    assert len(pods(node_kube, ns)) == 1  # FailJob: exit 2 is never retried


def test_deleting_a_training_collects_its_job_and_pods(
    node_kube: Any,
    node_namespace: str,
    node_operator: RunningOperator,
    artifacts: Path,
    tweets_csv: Path,
) -> None:
    kube = Kube(node_kube)
    ns = node_namespace
    start_training(kube, ns, shared_csv(tweets_csv, artifacts, ns), epochs=50)
    wait_for(
        lambda: any(
            "train" in p.metadata.name and p.status.phase == "Running" for p in pods(node_kube, ns)
        ),
        timeout=300,
        what="a running training pod",
    )
    client.CustomObjectsApi(node_kube).delete_namespaced_custom_object(
        "bertops.io", "v1alpha1", ns, "berttrainings", "tiny"
    )
    wait_for(
        lambda: (
            not any("train" in p.metadata.name for p in pods(node_kube, ns))
            and not [
                j
                for j in client.BatchV1Api(node_kube).list_namespaced_job(ns).items
                if "train" in name_of(j)
            ]
        ),
        timeout=120,
        what="the training's Job and pods garbage-collected",
    )


def kill_container(node_cluster: Any, pod: Any) -> int:
    """SIGKILL every process of the pod's step container, as the OOM killer would; found
    through the node's own cgroups. How many processes were killed."""
    from bertops.cluster.node import cleanup

    container_id = pod.status.container_statuses[0].container_id.split("://", 1)[1]
    groups = cleanup.cgroup_dirs(f"/bertops-{node_cluster.name}")
    found = [d for group in groups for d in group.rglob(f"*{container_id}*") if d.is_dir()]
    victims = cleanup.pids_in_cgroups(found)
    assert victims, f"no processes of container {container_id} under {groups}"
    cleanup.kill_all(victims)
    return len(victims)


def test_a_killed_training_pod_is_retried_and_resumes_from_its_checkpoint(
    node_cluster: Any,
    node_kube: Any,
    node_namespace: str,
    node_operator: RunningOperator,
    artifacts: Path,
    tweets_csv: Path,
) -> None:
    kube = Kube(node_kube)
    ns = node_namespace
    start_training(kube, ns, shared_csv(tweets_csv, artifacts, ns), epochs=6)
    checkpoints = artifacts / ns / "models" / "tiny" / "g1.ckpt"
    wait_for(
        lambda: checkpoints.is_dir() and any(checkpoints.glob("epoch-*")),
        timeout=300,
        what="the first epoch's checkpoint",
    )
    first = wait_for(
        lambda: [
            p
            for p in pods(node_kube, ns)
            if "train" in p.metadata.name and p.status.phase == "Running"
        ],
        what="the running training pod",
    )[0]
    assert kill_container(node_cluster, first) >= 1
    wait_for(
        lambda: reason(kube, "BertModel", ns, "tiny-v1") == "Verified",
        timeout=600,
        what="the retried training's model Ready",
    )
    training_body = kube.get("BertTraining", ns, "tiny")
    assert training_body is not None
    status = training_body["status"]
    assert status["attempts"] == 2, status
    retried = [
        p for p in pods(node_kube, ns) if "train" in p.metadata.name and "-a2-" in p.metadata.name
    ]
    assert retried, [p.metadata.name for p in pods(node_kube, ns)]
    logs = node_cluster.directory / "node" / "pod-logs"
    text = "".join(
        f.read_text() for f in logs.glob(f"{ns}_{retried[0].metadata.name}_*/step/*.log")
    )
    assert "resumed from the checkpoint of epoch" in text, text[-2000:]
