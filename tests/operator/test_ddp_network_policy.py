"""The per-training DDP NetworkPolicy (runtime/manifests.ddp_network_policy), field by
field and without a cluster: only N-rank steps get one, it selects exactly the Job's pods
by the Job's labels, opens only the DDP port between them (in and out), is owned like the
Job, and is created before the Job. Server-side dry-run and the applied object are in
tests/operator/test_kubernetes_runtime.py."""

from __future__ import annotations

from dataclasses import replace

from bertops.api.dataset import BertDatasetSpec
from bertops.api.steps import PrepareStep
from bertops.operator.config import OperatorConfig
from bertops.operator.runtime import manifests
from bertops.operator.runtime.base import StepRequest
from tests.integration import manifests as m

OWNER = {
    "apiVersion": "bertops.io/v1alpha1",
    "kind": "BertTraining",
    "name": "run-1",
    "uid": "aaaaaaaa-0000-4000-8000-000000000001",
    "controller": True,
    "blockOwnerDeletion": True,
}


def request(replicas: int) -> StepRequest:
    dataset = BertDatasetSpec.model_validate(m.dataset()["spec"])
    spec = PrepareStep(name="run-1-train-g1", dataset=dataset, output_uri="/artifacts/r")
    return StepRequest(
        name="run-1-train-g1", namespace="ml", spec=spec, replicas=replicas, owner=OWNER
    )


def test_policy_opens_the_ddp_port_only_between_the_steps_own_pods() -> None:
    step = request(2)
    policy = manifests.ddp_network_policy(step)
    job = manifests.job(step, OperatorConfig(runtime="kubernetes", image="i"))
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    own = {"podSelector": {"matchLabels": pod_labels}}
    port = [{"protocol": "TCP", "port": 29500}]
    assert (policy["apiVersion"], policy["kind"]) == ("networking.k8s.io/v1", "NetworkPolicy")
    assert policy["metadata"] == {
        "name": "run-1-train-g1",
        "namespace": "ml",
        "labels": job["metadata"]["labels"],
        "ownerReferences": [OWNER],
    }
    assert policy["spec"] == {
        "podSelector": {"matchLabels": pod_labels},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [own], "ports": port}],
        "egress": [{"to": [own], "ports": port}],
    }
    # The step label alone already tells two trainings' pods apart.
    assert pod_labels[manifests.STEP_LABEL] == "run-1-train-g1"
    assert pod_labels["bertops.io/berttraining"] == "run-1"


def test_only_multi_rank_steps_get_one_and_before_their_job() -> None:
    config = OperatorConfig(runtime="kubernetes", image="i")
    single = [doc["kind"] for doc in manifests.children(request(1), config)]
    assert single == ["ConfigMap", "Job"]
    multi = [doc["kind"] for doc in manifests.children(request(3), config)]
    assert multi == ["ConfigMap", "NetworkPolicy", "Service", "Job"]
    other = manifests.ddp_network_policy(replace(request(2), name="run-2-train-g1"))
    assert (
        other["spec"]["podSelector"]
        != manifests.ddp_network_policy(request(2))["spec"]["podSelector"]
    )
