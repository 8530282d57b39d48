"""Tenants on the real node cannot reach each other's files: a BertDataset in namespace A
that names B's raw feedback, or writes into B's tree, is refused before any pod starts;
and a pod with the very template the operator gives A's steps, told to read B's feedback
and write into B's tree, finds neither (its volume is A's own folder of the store)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from bertops.operator.kube import Kube
from tests.node.conftest import STEP_UID
from tests.node.test_node_e2e import name_of, shared_csv
from tests.operator.conftest import RunningOperator
from tests.operator.test_local_runtime import dataset
from tests.waiting import wait_for, wait_reason

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.e2e]
__all__ = ["tweets_csv"]
from tests.operator.test_local_runtime import tweets_csv  # noqa: E402

OTHER = "other-team"
RAW = "a raw text only the other team may read"

# Run in the step image by a pod made from the operator's own step pod template.
PROBE = """
import json, os, sys
root, ns, other = sys.argv[1:4]
found = {"root": sorted(os.listdir(root))}
try:
    found["read"] = open(f"{root}/{other}/deployments/web/feedback/feedback.jsonl").read()
except OSError as error:
    found["read"] = type(error).__name__
try:
    os.makedirs(f"{root}/{other}/datasets/spill")
    found["write"] = "written"
except OSError as error:
    found["write"] = type(error).__name__
open(f"{root}/{ns}/probe.txt", "w").write("own tree is writable")
open("/dev/termination-log", "w").write(json.dumps(found))
"""


def plant_other_tenant(artifacts: Path) -> Path:
    feedback = artifacts / OTHER / "deployments" / "web" / "feedback"
    feedback.mkdir(parents=True)
    (feedback / "feedback.jsonl").write_text(json.dumps({"text": RAW, "label": "positive"}) + "\n")
    for path in [artifacts / OTHER, *(artifacts / OTHER).rglob("*")]:
        os.chown(path, STEP_UID, STEP_UID)  # readable by the steps' user, were it reachable
    return feedback / "feedback.jsonl"


def probe_pod(node_kube: Any, ns: str, artifacts: Path) -> dict[str, Any]:
    """The template of the operator's prepare Job in ``ns``, with the probe as command."""
    batch, core = client.BatchV1Api(node_kube), client.CoreV1Api(node_kube)
    job = wait_for(
        lambda: next(iter(batch.list_namespaced_job(ns).items), None),
        timeout=120,
        what="the operator's prepare Job",
    )
    template = client.ApiClient().sanitize_for_serialization(job.spec.template)
    container = template["spec"]["containers"][0]
    container["command"] = ["python", "-c", PROBE, str(artifacts), ns, OTHER]
    template["spec"]["restartPolicy"] = "Never"
    name = f"probe-{uuid.uuid4().hex[:6]}"
    # A plain dict body, as the operator sends them: the client validates it into a V1Pod.
    body: Any = {"metadata": {"name": name}, "spec": template["spec"]}
    core.create_namespaced_pod(ns, body)

    def finished() -> client.V1Pod | bool:
        p = core.read_namespaced_pod(name, ns)
        assert p.status is not None
        return p.status.phase in ("Succeeded", "Failed") and p

    pod = wait_for(finished, timeout=300, what="the probe pod finished")
    terminated = pod.status.container_statuses[0].state.terminated
    assert pod.status.phase == "Succeeded", terminated.message
    return dict(json.loads(terminated.message))


def test_a_tenant_can_neither_name_nor_reach_another_tenants_files(
    node_kube: Any,
    node_namespace: str,
    node_operator: RunningOperator,
    artifacts: Path,
    tweets_csv: Path,
) -> None:
    kube, ns = Kube(node_kube), node_namespace
    stolen = plant_other_tenant(artifacts)
    own = shared_csv(tweets_csv, artifacts, ns)
    kube.create(
        dataset(ns, stolen, name="steal", format="jsonl", textColumn="text", labelColumn="label")
    )
    spill = dataset(ns, own, name="spill")
    spill["spec"]["outputUri"] = str(artifacts / OTHER / "datasets" / "spill")
    kube.create(spill)
    kube.create(dataset(ns, own))  # A's own data: prepared in a pod, as usual
    steal = wait_reason(kube, ns, "steal", "InvalidSpec", timeout=120)
    assert "outside this namespace's part of the artifact store" in steal["message"]
    assert "spec.outputUri" in wait_reason(kube, ns, "spill", "InvalidSpec", timeout=120)["message"]

    found = probe_pod(node_kube, ns, artifacts)
    assert found["root"] == [ns]  # the pod sees its own namespace's folder, nothing else
    assert found["read"] == "FileNotFoundError"  # B's raw feedback is not there to read
    assert found["write"] in ("OSError", "PermissionError")  # read-only root filesystem
    assert (artifacts / ns / "probe.txt").read_text() == "own tree is writable"
    assert not (artifacts / OTHER / "datasets").exists()
    assert RAW in stolen.read_text()
    jobs = [name_of(j) for j in client.BatchV1Api(node_kube).list_namespaced_job(ns).items]
    assert not [name for name in jobs if "steal" in name or "spill" in name], jobs
