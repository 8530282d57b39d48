"""The real operator on the real API server refuses, before any step starts: a task it
does not support, a URI outside its allowlist (the control plane's own kubeconfig, another
namespace's part of the artifact store), and a BertModel name already taken by a user's
object, which it never adopts."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from bertops.operator.kube import Kube
from tests.integration import manifests as m
from tests.operator.conftest import has_event, wait_events
from tests.operator.test_local_runtime import dataset
from tests.waiting import condition_of as condition
from tests.waiting import wait_for

pytestmark = pytest.mark.integration
__all__ = ["tweets_csv"]
from tests.operator.test_local_runtime import tweets_csv  # noqa: E402  (module fixture)


def put(kube: Kube, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    return kube.create(m.with_path(body, "metadata.namespace", namespace))


def refused(kube: Kube, kind: str, namespace: str, name: str, type_: str, reason: str) -> Any:
    found = wait_for(
        lambda: (
            (c := condition(kube.get(kind, namespace, name), type_)) and c["reason"] == reason and c
        ),
        timeout=60,
        what=f"{kind} {name} {type_} reason {reason}",
    )
    assert found["status"] == "False"
    wait_events(kube, namespace, name, has_event("Warning", reason), f"the Warning {reason}")
    return found


def no_steps(tmp_path: Path) -> None:
    steps = tmp_path / "state" / "steps"
    assert not steps.exists() or not any(steps.rglob("pid")), "a step was started"


def test_unsupported_task_is_refused_up_front(
    kube_layer: Kube, namespace: str, start_operator: Any, tmp_path: Path
) -> None:
    start_operator(namespace)
    put(kube_layer, namespace, m.training("ner", task="tokenClassification"))
    found = refused(kube_layer, "BertTraining", namespace, "ner", "Succeeded", "UnsupportedTask")
    assert "tokenClassification" in found["message"]
    no_steps(tmp_path)


def test_a_dataset_may_not_read_the_control_planes_kubeconfig(
    kube_layer: Kube, namespace: str, start_operator: Any, tmp_path: Path, cluster: Any
) -> None:
    start_operator(namespace, allowed_uri_prefixes=(str(tmp_path / "data"),))
    stolen = m.with_path(m.dataset("stolen"), "spec.source.uri", str(cluster.kubeconfig))
    put(kube_layer, namespace, stolen)
    found = refused(kube_layer, "BertDataset", namespace, "stolen", "Ready", "InvalidSpec")
    assert found["message"].startswith("spec.source.uri") and "allowlist" in found["message"]
    no_steps(tmp_path)


def test_a_namespace_can_neither_read_nor_write_another_namespaces_tree(
    kube_layer: Kube, namespace: str, start_operator: Any, tmp_path: Path, tweets_csv: Path
) -> None:
    """The local runtime's steps run as the operator's user, so the allowlist is the
    boundary: of the artifact store only ``<root>/<namespace>`` may be named."""
    start_operator(namespace, allowed_uri_prefixes=())  # no operator-wide extras
    root = tmp_path / "artifacts"
    other = root / "other-team" / "deployments" / "web" / "feedback"
    other.mkdir(parents=True)
    (other / "feedback.jsonl").write_text('{"text": "the other team\'s raw text", "label": "x"}\n')
    own = root / namespace / "data" / "tweets.csv"
    own.parent.mkdir(parents=True)
    shutil.copy(tweets_csv, own)
    kube_layer.create(
        dataset(namespace, other / "feedback.jsonl", "steal", format="jsonl", labelColumn="label")
    )
    spill = dataset(namespace, own, "spill")
    spill["spec"]["outputUri"] = str(root / "other-team" / "datasets" / "spill")
    kube_layer.create(spill)
    kube_layer.create(dataset(namespace, own))  # its own data: prepared as usual
    steal = refused(kube_layer, "BertDataset", namespace, "steal", "Ready", "InvalidSpec")
    assert steal["message"].startswith("spec.source.uri")
    assert f"({root}/{namespace})" in steal["message"]  # the part it may name
    written = refused(kube_layer, "BertDataset", namespace, "spill", "Ready", "InvalidSpec")
    assert written["message"].startswith("spec.outputUri")
    wait_for(
        lambda: (
            (c := condition(kube_layer.get("BertDataset", namespace, "tweets"), "Ready"))
            and c["status"] == "True"
        ),
        timeout=180,
        what="the namespace's own dataset prepared",
    )
    assert sorted(p.name for p in (root / "other-team").iterdir()) == ["deployments"]


def test_a_users_model_of_that_name_is_never_adopted(
    kube_layer: Kube, namespace: str, start_operator: Any, tmp_path: Path
) -> None:
    users = put(kube_layer, namespace, m.model("run", family="users-own"))
    start_operator(namespace)
    put(kube_layer, namespace, m.training("run"))
    found = refused(kube_layer, "BertTraining", namespace, "run", "Succeeded", "NameConflict")
    assert "not owned by this BertTraining" in found["message"]
    model = kube_layer.get("BertModel", namespace, "run")
    assert model is not None and model["metadata"]["uid"] == users["metadata"]["uid"]
    assert not model["metadata"].get("ownerReferences")
    assert model["spec"]["family"] == "users-own"
    no_steps(tmp_path)
