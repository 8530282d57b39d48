"""The operator's API layer (bertops.operator.kube) on the real API server: status writes
by server-side apply keep what other writers own, and a child whose name is taken by
someone else's object is never adopted."""

from __future__ import annotations

from typing import Any, cast

import pytest

from bertops.api.kinds import GROUP, VERSION, kind_info
from bertops.operator.kube import FIELD_MANAGER, Kube, NameConflictError
from tests.integration import manifests as m

pytestmark = pytest.mark.integration


@pytest.fixture
def layer(kube: Any) -> Kube:
    return Kube(kube)


def _create(layer: Kube, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    body = m.with_path(body, "metadata.namespace", namespace)
    plural = kind_info(body["kind"]).plural
    created = layer.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
    return cast(dict[str, Any], created)  # the client answers ``object``: the JSON document


def _condition(type_: str, reason: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


def test_status_apply_keeps_fields_others_own_and_drops_ours(layer: Kube, namespace: str) -> None:
    _create(layer, namespace, m.dataset())
    ours = {
        "step": "tweets-prep-g1",
        "artifactUri": "/a/g1",
        "conditions": [_condition("Ready", "Preparing")],
    }
    layer.patch_status("BertDataset", namespace, "tweets", ours)
    # Another writer (a newer operator component, a person) adds fields this operator's
    # planner does not emit: a status field and a condition of its own.
    layer.custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        "bertdatasets",
        "tweets",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "BertDataset",
            "metadata": {"name": "tweets"},
            "status": {"unknownTokenRate": 0.25, "conditions": [_condition("Audited", "Checked")]},
        },
        field_manager="someone-else",
        _content_type="application/apply-patch+yaml",
    )
    # Our next write leaves artifactUri out: it goes; theirs stays.
    after = layer.patch_status(
        "BertDataset",
        namespace,
        "tweets",
        {"step": "tweets-prep-g2", "conditions": [_condition("Ready", "Prepared")]},
    )
    status = after["status"]
    assert status["step"] == "tweets-prep-g2"
    assert "artifactUri" not in status
    assert status["unknownTokenRate"] == 0.25
    assert {c["type"]: c["reason"] for c in status["conditions"]} == {
        "Ready": "Prepared",
        "Audited": "Checked",
    }
    managers = {entry["manager"] for entry in after["metadata"]["managedFields"]}
    assert {FIELD_MANAGER, "someone-else"} <= managers


def _owned_model(uid: str) -> dict[str, Any]:
    body = m.model("run")
    body["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "bertops.io/v1alpha1",
            "kind": "BertTraining",
            "name": "run",
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    return body


def test_create_never_adopts_a_foreign_object(layer: Kube, namespace: str) -> None:
    users = _create(layer, namespace, m.model("run", family="users-own"))
    manifest = m.with_path(
        _owned_model("9f1c2a3b-0000-4000-8000-000000000001"), "metadata.namespace", namespace
    )
    with pytest.raises(NameConflictError, match="not owned by this object"):
        layer.create(manifest)
    still = layer.get("BertModel", namespace, "run")
    assert still is not None and still["metadata"]["uid"] == users["metadata"]["uid"]
    assert not still["metadata"].get("ownerReferences")
    assert still["spec"]["family"] == "users-own"


def test_create_adopts_its_own_child(layer: Kube, namespace: str) -> None:
    manifest = m.with_path(
        _owned_model("9f1c2a3b-0000-4000-8000-000000000002"), "metadata.namespace", namespace
    )
    first = layer.create(manifest)
    again = layer.create(manifest)  # e.g. after an operator restart
    assert again["metadata"]["uid"] == first["metadata"]["uid"]


def test_events_list_by_object(layer: Kube, namespace: str) -> None:
    body = _create(layer, namespace, m.dataset())
    layer.event(body, "Warning", "NameConflict", "BertModel run exists")
    assert {"type": "Warning", "reason": "NameConflict", "message": "BertModel run exists"} in (
        layer.events_for(namespace, "tweets")
    )
