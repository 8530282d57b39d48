"""The generated CRDs on a real kube-apiserver: CRUD, watch and the status subresource
for each kind, printer columns through kubectl, and invalid manifests refused by the
API server itself with messages a person can act on."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any, cast

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from bertops.api.kinds import GROUP, KINDS, VERSION, kind_info
from tests.api.rule_cases import BOUND_CASES, RULE_CASES, VALID_RECIPES
from tests.integration import manifests as m

pytestmark = pytest.mark.integration

BUILDERS = {
    "BertDataset": m.dataset,
    "BertTraining": m.training,
    "BertModel": m.model,
    "BertDeployment": m.deployment,
}


def create(api: client.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    plural = kind_info(body["kind"]).plural
    return document(api.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body))


def document(answer: object) -> dict[str, Any]:
    """The client's custom-object calls answer ``object``: a JSON document (as in Kube)."""
    return cast(dict[str, Any], answer)


def refusal(error: ApiException) -> str:
    """The API server's message in a refusal's body."""
    assert error.body is not None
    return str(json.loads(error.body)["message"])


@pytest.fixture
def api(kube: Any) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube)


@pytest.mark.parametrize("info", KINDS, ids=lambda info: info.kind)
def test_crud_watch_and_status(api: client.CustomObjectsApi, namespace: str, info: Any) -> None:
    body = BUILDERS[info.kind]()
    name = body["metadata"]["name"]

    # Watch from the resourceVersion before any change: replays every event in order.
    before = document(api.list_namespaced_custom_object(GROUP, VERSION, namespace, info.plural))
    start_version = before["metadata"]["resourceVersion"]

    created = create(api, namespace, body)
    assert created["metadata"]["generation"] == 1
    got = document(api.get_namespaced_custom_object(GROUP, VERSION, namespace, info.plural, name))
    assert got["spec"] == created["spec"]
    listed = document(api.list_namespaced_custom_object(GROUP, VERSION, namespace, info.plural))
    assert [item["metadata"]["name"] for item in listed["items"]] == [name]

    # Status goes through the status subresource; a status in a main-resource update is
    # ignored, and the status write does not bump the generation.
    status = {
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "Preparing",
                "message": "step started",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 1,
            }
        ],
    }
    patched = document(
        api.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, info.plural, name, {"status": status}
        )
    )
    assert patched["status"]["conditions"][0]["reason"] == "Preparing"
    assert patched["metadata"]["generation"] == 1

    # Undeclared status fields are pruned; declared ones survive.
    pruned = document(
        api.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, info.plural, name, {"status": {"madeUpField": 1}}
        )
    )
    assert "madeUpField" not in pruned["status"]

    api.delete_namespaced_custom_object(GROUP, VERSION, namespace, info.plural, name)
    with pytest.raises(ApiException) as gone:
        api.get_namespaced_custom_object(GROUP, VERSION, namespace, info.plural, name)
    assert gone.value.status == 404

    events = [
        (event["type"], event["object"]["metadata"]["name"])
        for event in watch.Watch().stream(
            api.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            info.plural,
            resource_version=start_version,
            timeout_seconds=2,
        )
    ]
    assert events == [("ADDED", name), ("MODIFIED", name), ("DELETED", name)]


def test_spec_defaults_are_applied_by_the_api_server(
    api: client.CustomObjectsApi, namespace: str
) -> None:
    created = create(api, namespace, m.training(hyperparameters={}))
    hp = created["spec"]["hyperparameters"]
    assert hp["learningRate"] == 5e-05 and hp["batchSize"] == 16 and hp["epochs"] == 3
    assert hp["dropout"] == 0.1 and hp["scheduler"] == "linear"
    assert created["spec"]["task"] == "sequenceClassification"


def test_bertmodel_spec_is_immutable(api: client.CustomObjectsApi, namespace: str) -> None:
    create(api, namespace, m.model())
    with pytest.raises(ApiException) as refused:
        api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "bertmodels", "run-1-int8", {"spec": {"family": "other"}}
        )
    assert "a BertModel is immutable" in refusal(refused.value)


INVALID = [
    (
        "unknown task",
        m.training(task="imageClassification"),
        'spec.task: Unsupported value: "imageClassification"',
    ),
    (
        "negative epochs",
        m.with_path(m.training(), "spec.hyperparameters.epochs", -1),
        "spec.hyperparameters.epochs in body should be greater than or equal to 1",
    ),
    (
        "zero replicas",
        m.with_path(m.training(), "spec.replicas", 0),
        "spec.replicas in body should be greater than or equal to 1",
    ),
    (
        "canary weight over 100",
        m.with_path(m.deployment(), "spec.rollout.steps", [{"weight": 10}, {"weight": 150}]),
        "spec.rollout.steps[1].weight in body should be less than or equal to 100",
    ),
    (
        "drift threshold over 1",
        m.with_path(m.deployment(), "spec.drift.threshold", 1.5),
        "spec.drift.threshold in body should be less than or equal to 1",
    ),
    (
        "missing dataset ref",
        m.with_path(m.training(), "spec.datasetRef", m.DELETE),
        "spec.datasetRef: Required value",
    ),
    (
        "unknown compression method",
        m.with_path(m.model(), "spec.compression.steps", [{"method": "sparsify"}]),
        'spec.compression.steps[0].method: Unsupported value: "sparsify"',
    ),
    (
        "sparsity 1.5",
        m.with_path(
            m.model(), "spec.compression.steps", [{"method": "magnitudePrune", "sparsity": 1.5}]
        ),
        "spec.compression.steps[0].sparsity in body should be less than 1",
    ),
    (
        "name not a DNS label",
        m.with_path(m.dataset(), "metadata.name", "my.dataset"),
        "metadata.name must be a DNS label",
    ),
    (
        "dataset ref not a DNS label",
        m.with_path(m.training(), "spec.datasetRef.name", "Tweets_1"),
        "spec.datasetRef.name in body should match",
    ),
]


# The CEL rules (also enforced by pydantic: tests/api/test_rules.py) and the fractional
# bounds, whose messages must state the real range.
INVALID += RULE_CASES + BOUND_CASES


@pytest.mark.parametrize(("case", "body", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_manifest_is_refused(
    api: client.CustomObjectsApi, namespace: str, case: str, body: dict[str, Any], message: str
) -> None:
    with pytest.raises(ApiException) as refused:
        create(api, namespace, body)
    assert refused.value.status == 422, case
    assert message in refusal(refused.value)


def test_fractional_bound_message_is_the_only_one(
    api: client.CustomObjectsApi, namespace: str
) -> None:
    """No "should be less than or equal to 0" beside the real range."""
    body = m.with_path(m.training(), "spec.hyperparameters.learningRate", 5)
    with pytest.raises(ApiException) as refused:
        create(api, namespace, body)
    message = refusal(refused.value)
    assert "between 1e-06 and 0.001" in message and "should be" not in message


@pytest.mark.parametrize("steps", VALID_RECIPES, ids=lambda s: "-".join(x["method"] for x in s))
def test_valid_recipes_are_accepted(
    api: client.CustomObjectsApi, namespace: str, steps: list[dict[str, Any]]
) -> None:
    create(api, namespace, m.with_path(m.model(), "spec.compression.steps", steps))


def kubectl(cluster: Any, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))
    return subprocess.run(
        ["kubectl", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_kubectl_refuses_unknown_fields(cluster: Any, namespace: str) -> None:
    body = m.with_path(m.training(), "spec.hyperparameters.learningrate", 0.1)
    result = kubectl(cluster, "apply", "-n", namespace, "-f", "-", stdin=json.dumps(body))
    assert result.returncode != 0
    assert 'unknown field "spec.hyperparameters.learningrate"' in result.stderr


def test_kubectl_get_bertops_prints_columns(
    cluster: Any, api: client.CustomObjectsApi, namespace: str
) -> None:
    for builder in BUILDERS.values():
        create(api, namespace, builder())
    api.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        "bertdatasets",
        "tweets",
        {
            "status": {
                "rows": {"total": 1234},
                "numLabels": 3,
                "shortChecksum": "0123456789ab",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "Prepared",
                        "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ],
            }
        },
    )
    api.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        "bertdeployments",
        "sentiment",
        {
            "status": {
                "stableModel": "run-1",
                "canaryModel": "run-2",
                "canaryWeight": 10,
                "driftDisplay": "0.12",
            }
        },
    )
    result = kubectl(cluster, "get", "bertops", "-n", namespace)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for header in (
        "ROWS",
        "LABELS",
        "CHECKSUM",
        "DATASET",
        "REPLICAS",
        "EPOCH",
        "FAMILY",
        "PARENT",
        "STABLE",
        "CANARY",
        "WEIGHT",
        "DRIFT",
        "READY",
        "REASON",
        "AGE",
    ):
        assert header in out, header
    dataset_line = next(
        line for line in out.splitlines() if "bertdataset.bertops.io/tweets" in line
    )
    assert dataset_line.split()[1:6] == ["1234", "3", "0123456789ab", "True", "Prepared"]
    deployment_line = next(line for line in out.splitlines() if "/sentiment" in line)
    assert deployment_line.split()[1:5] == ["run-1", "run-2", "10", "0.12"]
    short = kubectl(cluster, "get", "bds,btr,bm,bdep", "-n", namespace, "-o", "name")
    assert len(short.stdout.split()) == 4
