"""The kubernetes runtime in real pods on a real node (bertops.cluster.node), the artifact
store on a hostPath volume: a step that exits 2 failing its Job at once, a deleted
BertTraining whose Job and pods the garbage collector removes, and a killed training pod
retried from its checkpoint; and the chain with the store on the real S3 server instead,
run by the operator as a pod (the gitops install with the artifacts-object-store
component): dataset → 2-rank training → model → INT8 model → served → a drift check on
the prediction log the server pod shipped, pods holding only their namespace's key. No
kubelet stand-in anywhere in this file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import s3fs
from kubernetes import client

from bertops.cluster.node.netns import call_inside, netns_name
from bertops.operator.kube import Kube
from tests.node.conftest import STEP_UID
from tests.node.object_store import operator_container
from tests.operator.conftest import RunningOperator
from tests.operator.serving_helpers import deployment
from tests.operator.test_local_runtime import TINY, dataset, training
from tests.s3 import needs_s3
from tests.waiting import condition_of as condition
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.e2e]
__all__ = ["tweets_csv"]
from tests.operator.test_local_runtime import tweets_csv  # noqa: E402  (module fixture)

INDEX_LABEL = "batch.kubernetes.io/job-completion-index"


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


def start_training(kube: Kube, ns: str, csv: Path | str, epochs: int, replicas: int = 1) -> None:
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


def int8_model(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "bertops.io/v1alpha1",
        "kind": "BertModel",
        "metadata": {"name": "tiny-v1-int8", "namespace": namespace},
        "spec": {
            "family": "tiny-int8",  # not the deployment's family: it serves tiny-v1
            "compression": {
                "parentRef": {"name": "tiny-v1"},
                "steps": [{"method": "quantize", "granularity": "perChannel"}],
                "gate": {"maxAccuracyDrop": 0.3, "maxF1Drop": 0.3},
            },
        },
    }


@needs_s3
def test_the_chain_runs_in_pods_on_s3(
    node_cluster: Any,
    node_kube: Any,
    node_namespace: str,
    s3_in_cluster: tuple[str, int],
    operator_on_s3: list[dict[str, Any]],
    tweets_csv: Path,
) -> None:
    """The operator pod (the gitops install with the artifacts-object-store component)
    runs the chain with the store on the real S3 server: the dataset (its CSV in the
    bucket) → a 2-rank training → its model → an INT8 model, then a BertDeployment whose
    server downloads and verifies the model from the bucket and ships its prediction log
    there, where a drift Job reads it and publishes its report. Pods mount no volume of
    the store and hold only their namespace's key."""
    kube, ns, (root, _) = Kube(node_kube), node_namespace, s3_in_cluster
    env = {e["name"]: e.get("value") for e in operator_container(operator_on_s3)["env"]}
    assert env["BERTOPS_ARTIFACT_ROOT"] == root  # the component's root, set by the overlay
    store = s3fs.S3FileSystem(skip_instance_cache=True)
    data = f"{root}/{ns}/data/tweets.csv"
    store.put_file(str(tweets_csv), data.removeprefix("s3://"))
    start_training(kube, ns, data, epochs=1, replicas=2)
    kube.create(int8_model(ns))
    ranks: dict[str, Any] = {}  # rank -> its pod, as first seen (created one by one)

    def both_ranks() -> bool:
        for found in pods(node_kube, ns):
            index = found.metadata.labels.get(INDEX_LABEL)
            if index is not None and "train" in found.metadata.name:
                ranks.setdefault(index, found)
        return set(ranks) >= {"0", "1"}

    wait_for(both_ranks, timeout=300, what="both training ranks as pods")
    for name in ("tiny-v1", "tiny-v1-int8"):

        def verified(name: str = name) -> bool:
            return reason(kube, "BertModel", ns, name) == "Verified"

        wait_for(verified, timeout=600, what=f"{name} Ready from pods on S3")
        status = (kube.get("BertModel", ns, name) or {})["status"]
        assert status["artifactUri"].startswith(f"{root}/{ns}/models/"), status
    volumes = {v.name for p in pods(node_kube, ns) if p.spec for v in p.spec.volumes or ()}
    assert "artifacts" not in volumes, volumes  # no volume of the store at all
    # Rank 0's log (the node's podLogsDir) says both ranks joined one gloo group.
    logs = node_cluster.directory / "node" / "pod-logs"
    rank0 = ranks["0"].metadata.name
    text = "".join(f.read_text() for f in logs.glob(f"{ns}_{rank0}_*/step/*.log"))
    assert "2 rank(s)" in text, text[-2000:]

    body = deployment(ns)
    body["spec"]["serving"]["predictionLog"] = "hash"
    body["spec"]["drift"] = {"intervalSeconds": 10, "windowSize": 50, "referenceSize": 50}
    # The node has 2 CPUs: the server, two gateways, the operator and a reference or
    # drift Job must fit at once.
    body["spec"]["serving"]["resources"] = {"cpu": "250m", "memory": "2Gi"}
    kube.create(body)
    wait_for(
        lambda: (
            reason(kube, "BertDeployment", ns, "web") == "Serving"
            and ((kube.get("BertDeployment", ns, "web") or {}).get("status") or {}).get(
                "stableModel"
            )
            == "tiny-v1"
        ),
        timeout=300,
        what="tiny-v1 served from S3 in pods",
    )
    service = client.CoreV1Api(node_kube).read_namespaced_service("web-gateway", ns)
    assert service.spec is not None
    endpoint = f"http://{service.spec.cluster_ip}:8000"
    texts = {"texts": [f"the flight {n} was late" for n in range(60)]}

    def answered() -> httpx.Response | None:
        # The gateway may still be taking the new server into its routes: ask again.
        response = call_inside(
            netns_name(node_cluster.name),
            lambda: httpx.post(f"{endpoint}/predict", json=texts, timeout=60),
        )
        return response if response.status_code == 200 else None

    wait_for(answered, timeout=90, interval=2, what="an answer through the gateway Service")
    # The server's prediction log, spooled in the pod's /tmp, is shipped to the bucket; a
    # drift Job reads its window there and publishes its report there, and the reference
    # Job its sample, each with the namespace's key.
    drift = wait_for(
        lambda: (
            (d := ((kube.get("BertDeployment", ns, "web") or {}).get("status") or {}).get("drift"))
            and d.get("windowRows") == 50
            and d
        ),
        timeout=240,
        what="a drift check in a pod on the log shipped from the server pod",
        log=lambda: json.dumps(
            {
                "status": (kube.get("BertDeployment", ns, "web") or {}).get("status"),
                "pods": [f"{p.metadata.name}: {p.status.phase}" for p in pods(node_kube, ns)],
            },
            indent=1,
        )[-4000:],
    )
    assert drift["reportUri"].startswith(f"{root}/{ns}/deployments/web/drift/"), drift
    assert drift["referenceUri"].startswith(f"{root}/{ns}/references/"), drift
    store.invalidate_cache()
    assert store.find(f"{root}/{ns}/deployments/web/predictions".removeprefix("s3://"))
    assert not any(".tmp-" in path for path in store.find(f"{root}/{ns}".removeprefix("s3://")))
