"""The poller that replaces kopf timers (which would add a finalizer): it reconciles
every object seen and not deleted, and one object's failure does not stop the others."""

from __future__ import annotations

from bertops.operator.poller import Poller


def test_polls_known_objects_and_survives_failures() -> None:
    seen: list[tuple[str, str, str]] = []

    def reconcile(kind: str, namespace: str, name: str) -> None:
        seen.append((kind, namespace, name))
        if name == "broken":
            raise RuntimeError("boom")

    poller = Poller(reconcile, interval=60)
    for name in ("a", "broken", "gone"):
        poller.track("BertDataset", "ns", name)
    poller.track("BertDataset", "ns", "gone", deleted=True)
    poller.poll_once()
    poller.poll_once()
    assert seen == [("BertDataset", "ns", "a"), ("BertDataset", "ns", "broken")] * 2
