"""The watch-fed object cache the reconcilers read: what the events (and our own status
writes) showed, never an older version over a newer one, nothing while not live (no
watch feeds it), and a namespace it knows no models of is listed from the API server."""

from __future__ import annotations

from typing import Any

import pytest

from bertops.operator.cache import ObjectCache


def body(
    name: str, namespace: str = "a", kind: str = "BertModel", rv: str | None = "1", **status: Any
) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": namespace, "name": name}
    if rv is not None:
        meta["resourceVersion"] = rv
    return {"kind": kind, "metadata": meta, "status": status}


def live_cache() -> ObjectCache:
    cache = ObjectCache()
    cache.live = True
    return cache


def test_list_serves_what_the_events_showed_and_lists_a_cold_namespace() -> None:
    listed: list[str] = []

    def fallback(namespace: str) -> list[dict[str, Any]]:
        listed.append(namespace)
        return [body("from-api", namespace)]

    cache = live_cache()
    cache.put(body("v1", rv="1", ready=False))
    cache.put(body("v1", rv="2", ready=True))  # a MODIFIED event replaces the body
    cache.put(body("v2"))
    cache.put(body("d1", kind="BertDataset"))  # another kind: not a model
    assert sorted(m["metadata"]["name"] for m in cache.list("BertModel", "a", fallback)) == [
        "v1",
        "v2",
    ]
    v1 = cache.get("BertModel", "a", "v1")
    assert v1 is not None
    assert v1["status"]["ready"] is True
    assert listed == []
    cache.remove("BertModel", "a", "v1")
    cache.remove("BertModel", "a", "v2")
    cache.remove("BertModel", "b", "never-seen")
    assert [m["metadata"]["name"] for m in cache.list("BertModel", "a", fallback)] == ["from-api"]
    assert listed == ["a"]
    assert len(cache) == 1


@pytest.mark.parametrize(
    ("held", "incoming", "kept"),
    [
        ("5", "6", "6"),  # newer replaces
        ("5", "5", "5"),  # the same version (an event after our write's response)
        ("7", "6", "7"),  # a late event must not bring an older status back
        ("10", "9", "10"),  # compared as numbers, not strings
        ("x", "6", "6"),  # not a number: the newest received wins
        (None, "6", "6"),
        ("6", None, None),
    ],
)
def test_an_older_version_never_replaces_a_newer_one(
    held: str | None, incoming: str | None, kept: str | None
) -> None:
    cache = live_cache()
    cache.put(body("m", rv=held, tag="held"))
    cache.put(body("m", rv=incoming, tag="incoming"))
    found = cache.get("BertModel", "a", "m")
    assert found is not None
    assert found["metadata"].get("resourceVersion") == kept


def test_get_answers_only_while_live_and_returns_a_private_copy() -> None:
    cache = ObjectCache()
    cache.put(body("m", phase="Ready"))
    assert cache.get("BertModel", "a", "m") is None  # no watch feeds it: read the API
    cache.live = True
    copy = cache.get("BertModel", "a", "m")
    assert copy is not None
    copy["status"]["phase"] = "changed by a planner"
    again = cache.get("BertModel", "a", "m")
    assert again is not None
    assert again["status"]["phase"] == "Ready"
    assert cache.get("BertModel", "a", "other") is None
    assert cache.get("BertDataset", "a", "m") is None


def test_managed_fields_are_not_kept_and_the_callers_body_is_left_as_it_was() -> None:
    cache = live_cache()
    event = body("v1", ready=True)
    event["metadata"]["managedFields"] = [{"manager": "bertops", "operation": "Apply"}]
    cache.put(event)
    held = cache.get("BertModel", "a", "v1") or {}
    assert "managedFields" not in held["metadata"]
    assert held["metadata"]["resourceVersion"] == "1" and held["status"] == {"ready": True}
    assert event["metadata"]["managedFields"] == [{"manager": "bertops", "operation": "Apply"}]
