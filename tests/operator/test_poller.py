"""The poller that replaces kopf timers (which would add a finalizer): it looks at an
object when a watch event says it changed and then only as often as its reconcile asks;
a settled object gets no looks at all; one object's failure does not stop the others;
a BertModel's event wakes the deployments of its namespace."""

from __future__ import annotations

import threading
import time

from bertops.operator.poller import Poller


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_settled_objects_get_no_looks_and_running_ones_are_looked_at_each_interval() -> None:
    seen: list[str] = []
    delays = {"settled": None, "running": 2.0}

    def reconcile(kind: str, namespace: str, name: str) -> float | None:
        seen.append(name)
        return delays[name]

    clock = Clock()
    poller = Poller(reconcile, interval=2.0, clock=clock)
    poller.track("BertDataset", "ns", "settled")
    poller.track("BertDataset", "ns", "running")
    assert poller.poll_once() == 2  # both due at once after their watch event
    for _ in range(30):  # a minute of ticks
        clock.now += 2.0
        poller.poll_once()
    assert seen.count("settled") == 1
    assert seen.count("running") == 31  # noticed at every interval
    assert poller.due() == [("BertDataset", "ns", "running")]
    # A change (a watch event) brings the settled one back, once.
    poller.track("BertDataset", "ns", "settled")
    clock.now += 0.001
    poller.poll_once()
    assert seen.count("settled") == 2


def test_survives_failures_and_forgets_deleted_objects() -> None:
    seen: list[str] = []

    def reconcile(kind: str, namespace: str, name: str) -> float | None:
        seen.append(name)
        if name == "broken":
            raise RuntimeError("boom")
        return None

    clock = Clock()
    poller = Poller(reconcile, interval=5.0, clock=clock)
    for name in ("a", "broken", "gone"):
        poller.track("BertDataset", "ns", name)
    poller.track("BertDataset", "ns", "gone", deleted=True)
    poller.poll_once()
    assert sorted(seen) == ["a", "broken"]
    clock.now += 5.0  # a failure is looked at again one interval later
    poller.poll_once()
    assert sorted(seen) == ["a", "broken", "broken"]
    assert poller.known() == [("BertDataset", "ns", "a"), ("BertDataset", "ns", "broken")]


def test_model_event_wakes_deployments_of_its_namespace() -> None:
    seen: list[tuple[str, str]] = []

    def reconcile(kind: str, namespace: str, name: str) -> float | None:
        seen.append((namespace, name))
        return 30.0 if kind == "BertDeployment" else None

    clock = Clock()
    poller = Poller(reconcile, interval=2.0, clock=clock)
    poller.track("BertDeployment", "a", "web")
    poller.track("BertDeployment", "b", "other")
    poller.poll_once()
    seen.clear()
    clock.now += 1.0
    poller.track("BertModel", "a", "v2")  # a new model may change web's selection
    poller.poll_once()
    assert sorted(seen) == [("a", "v2"), ("a", "web")]


def test_thread_wakes_on_events_and_stops_promptly() -> None:
    looked = threading.Event()

    def reconcile(kind: str, namespace: str, name: str) -> float | None:
        looked.set()
        return None

    poller = Poller(reconcile, interval=60.0)
    poller.start()
    try:
        time.sleep(0.05)  # idle: waiting with nothing due
        poller.track("BertDataset", "ns", "x")
        assert looked.wait(5), "a watch event must wake the poller at once"
    finally:
        started = time.monotonic()
        poller.stop()
        assert time.monotonic() - started < 5


def test_events_do_not_duplicate_looks_already_scheduled() -> None:
    """Our own status patch (a MODIFIED event) does not pull a scheduled look forward;
    an object a kopf handler reconciles for its event (ADDED) gets only the safety-net
    look one interval later; a change (a creation, a new generation) is looked at at
    once, even with a look scheduled."""
    seen: list[str] = []

    def reconcile(kind: str, namespace: str, name: str) -> float | None:
        seen.append(name)
        return 2.0

    clock = Clock()
    poller = Poller(reconcile, interval=2.0, clock=clock)
    poller.track("BertDataset", "ns", "new", handled=True)
    assert poller.poll_once() == 0 and seen == []
    clock.now += 2.0
    assert poller.poll_once() == 1  # the safety net
    poller.track("BertDataset", "ns", "new")  # a MODIFIED event: already scheduled
    clock.now += 0.5
    assert poller.poll_once() == 0
    clock.now += 1.5
    assert poller.poll_once() == 1 and seen == ["new", "new"]
    poller.track("BertDataset", "ns", "new", changed=True)  # a new generation
    assert poller.poll_once() == 1 and seen == ["new", "new", "new"]


def test_workers_look_at_due_objects_without_waiting_for_a_slow_one() -> None:
    """The running poller hands each due object to a free worker at once: a slow look
    holds up no other object, and one object is never looked at by two workers at once
    (a second event while it is busy gives exactly one more look afterwards)."""
    release = threading.Event()
    fast_done = threading.Event()
    lock = threading.Lock()
    busy: dict[str, int] = {}
    overlaps: list[str] = []
    looks: list[str] = []

    def reconcile(kind: str, namespace: str, name: str) -> float | None:
        with lock:
            busy[name] = busy.get(name, 0) + 1
            if busy[name] > 1:
                overlaps.append(name)
            looks.append(name)
        try:
            if name == "slow":
                release.wait(10)
            else:
                fast_done.set()
        finally:
            with lock:
                busy[name] -= 1
        return None

    poller = Poller(reconcile, interval=60.0, workers=4)
    poller.start()
    try:
        poller.track("BertDataset", "ns", "slow", changed=True)
        deadline = time.monotonic() + 5
        while "slow" not in looks and time.monotonic() < deadline:
            time.sleep(0.01)
        poller.track("BertDataset", "ns", "slow", changed=True)  # busy: once more, later
        poller.track("BertDataset", "ns", "slow", changed=True)
        poller.track("BertDataset", "ns", "fast", changed=True)
        assert fast_done.wait(5), "a slow look must not hold up another object"
        release.set()
        deadline = time.monotonic() + 5
        while looks.count("slow") < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
    finally:
        release.set()
        poller.stop()
    assert overlaps == []
    assert looks.count("slow") == 2 and looks.count("fast") == 1


def test_a_look_scheduled_by_a_worker_wakes_the_sleeping_poller() -> None:
    """A running step's next look, scheduled by the worker that just looked, is taken
    on time even though the poller was asleep with nothing else due."""
    looks: list[float] = []

    def reconcile(kind: str, namespace: str, name: str) -> float | None:
        looks.append(time.monotonic())
        return 0.05 if len(looks) < 3 else None

    poller = Poller(reconcile, interval=60.0)
    poller.start()
    try:
        poller.track("BertDataset", "ns", "running", changed=True)
        deadline = time.monotonic() + 5
        while len(looks) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        poller.stop()
    assert len(looks) == 3, "the rescheduled looks never came"
    assert looks[2] - looks[0] < 2
