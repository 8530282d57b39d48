"""The watch-fed BertModel cache a deployment's look reads: what the events showed, per
namespace; a namespace it knows nothing of is listed from the API server instead."""

from __future__ import annotations

from typing import Any

from bertops.operator.cache import ModelCache


def body(namespace: str, name: str, ready: bool = True) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name}, "status": {"ready": ready}}


def test_cache_serves_what_the_events_showed_and_lists_a_cold_namespace() -> None:
    listed: list[str] = []

    def fallback(namespace: str) -> list[dict[str, Any]]:
        listed.append(namespace)
        return [body(namespace, "from-api")]

    cache = ModelCache()
    cache.put(body("a", "v1", ready=False))
    cache.put(body("a", "v1"))  # a MODIFIED event replaces the body
    cache.put(body("a", "v2"))
    assert sorted(m["metadata"]["name"] for m in cache.list("a", fallback)) == ["v1", "v2"]
    assert cache.list("a", fallback)[0]["status"]["ready"] is True
    assert listed == []
    cache.remove("a", "v1")
    cache.remove("a", "v2")
    cache.remove("b", "never-seen")
    assert [m["metadata"]["name"] for m in cache.list("a", fallback)] == ["from-api"]
    assert listed == ["a"]
