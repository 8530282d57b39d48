"""The dynamic batcher without HTTP or a model: when it dispatches (a lone request on an
idle model at once, a burst after the fill wait, requests queued behind a running batch
together), and under failure and overload: one bad request in a batch fails alone, the
queue is bounded, a caller's wait has a deadline, and the worker is supervised (restarted
after a crash, marked dead when it keeps crashing)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from bertops.server.batcher import BatcherBusyError, BatcherClosedError, DynamicBatcher, _Item


def upper(texts: Sequence[str]) -> list[str]:
    if any(text == "bad" for text in texts):
        raise ValueError("cannot tokenize 'bad'")
    return [text.upper() for text in texts]


@pytest.mark.asyncio
async def test_a_failing_batch_is_retried_request_by_request() -> None:
    calls: list[list[str]] = []

    def predict(texts: list[str]) -> list[str]:
        calls.append(list(texts))
        return upper(texts)

    batcher: DynamicBatcher[str] = DynamicBatcher(predict, max_batch_size=8, max_wait_seconds=0.2)
    batcher.start()
    outcomes = await asyncio.gather(
        batcher.submit(["good one"]),
        batcher.submit(["bad"]),
        batcher.submit(["two", "three"]),
        return_exceptions=True,
    )
    await batcher.close()
    assert calls[0] == ["good one", "bad", "two", "three"]  # they did share a batch
    assert [o.results for o in outcomes if not isinstance(o, BaseException)] == [
        ["GOOD ONE"],
        ["TWO", "THREE"],
    ]
    assert isinstance(outcomes[1], ValueError)


class Gate:
    """A predict that blocks on the text "block" until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, texts: list[str]) -> list[str]:
        if "block" in texts:
            self.entered.set()
            self.release.wait(10)
        return upper(texts)

    async def running(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 5)


WAIT = 0.5  # the fill wait in the dispatch tests: far above any scheduling jitter


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("idle_dispatch", "arrivals", "batches", "lone_waits"),
    [
        # An idle model answers a lone request without the fill wait, also the next one.
        (True, [(0, "a"), (0.05, "b")], [["a"], ["b"]], False),
        # The previous behaviour, still available: every batch waits for company.
        (False, [(0, "a"), (0.05, "b")], [["a", "b"]], True),
        # A burst (two queued at once) waits for the fill: the straggler joins it.
        (True, [(0, "a"), (0, "b"), (0.05, "c")], [["a", "b", "c"]], None),
        # After a batch with company, a lone request waits: its neighbours come back.
        (True, [(0, "a"), (0, "b"), (0.8, "c"), (0.05, "d")], [["a", "b"], ["c", "d"]], None),
    ],
    ids=["lone-runs-at-once", "wait-always", "burst-waits-for-company", "company-returns"],
)
async def test_when_an_idle_model_dispatches(
    idle_dispatch: bool,
    arrivals: list[tuple[float, str]],
    batches: list[list[str]],
    lone_waits: bool | None,
) -> None:
    calls: list[list[str]] = []

    def predict(texts: list[str]) -> list[str]:
        calls.append(list(texts))
        return upper(texts)

    batcher: DynamicBatcher[str] = DynamicBatcher(
        predict, max_batch_size=8, max_wait_seconds=WAIT, dispatch_when_idle=idle_dispatch
    )
    batcher.start()
    tasks = []
    for delay, text in arrivals:
        if delay:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(batcher.submit([text])))
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks), 5)
    await batcher.close()
    assert calls == batches
    assert [o.results for o in outcomes] == [[text.upper()] for _, text in arrivals]
    if lone_waits is not None:
        assert (outcomes[0].queue_seconds >= WAIT * 0.8) is lone_waits


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("max_batch_size", "requests", "batches"),
    [
        (8, [["a"], ["b"], ["c"]], [["a", "b", "c"]]),
        (4, [["a", "b"], ["c", "d"], ["e"]], [["a", "b", "c", "d"], ["e"]]),
        # A request is not split only to fill a batch; one above the maximum is chunked.
        (3, [["a"], ["b", "c", "d", "e"]], [["a"], ["b", "c", "d"], ["e"]]),
    ],
    ids=["share-one-batch", "fill-then-next", "chunks-keep-order"],
)
async def test_requests_queued_behind_a_running_batch_are_batched(
    max_batch_size: int, requests: list[list[str]], batches: list[list[str]]
) -> None:
    gate = Gate()
    calls: list[list[str]] = []

    def predict(texts: list[str]) -> list[str]:
        calls.append(list(texts))
        return gate(texts)

    batcher: DynamicBatcher[str] = DynamicBatcher(
        predict, max_batch_size=max_batch_size, max_wait_seconds=0.005
    )
    batcher.start()
    blocked = asyncio.create_task(batcher.submit(["block"]))
    await gate.running()  # the model is busy from here on
    tasks = [asyncio.create_task(batcher.submit(texts)) for texts in requests]
    await asyncio.sleep(0)  # the submits run: all queued behind the running batch
    assert batcher.queued_texts == sum(map(len, requests))
    gate.release.set()
    assert (await blocked).results == ["BLOCK"]
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks), 5)
    await batcher.close()
    assert calls == [["block"], *batches]
    assert [o.results for o in outcomes] == [[t.upper() for t in texts] for texts in requests]


@pytest.mark.asyncio
async def test_a_full_queue_refuses_at_once_with_a_retry_hint() -> None:
    gate = Gate()
    batcher: DynamicBatcher[str] = DynamicBatcher(
        gate, max_batch_size=1, max_wait_seconds=0, max_queued_texts=2
    )
    batcher.start()
    blocked = asyncio.create_task(batcher.submit(["block"]))
    await gate.running()  # taken: the queue is empty again
    queued = [asyncio.create_task(batcher.submit([f"q{i}"])) for i in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(BatcherBusyError, match="2 texts queued") as refused:
        await batcher.submit(["one too many"])
    assert refused.value.retry_after is not None and refused.value.retry_after > 0
    gate.release.set()
    assert (await blocked).results == ["BLOCK"]
    assert [(await task).results for task in queued] == [["Q0"], ["Q1"]]
    await batcher.close()


@pytest.mark.asyncio
async def test_submit_has_a_deadline_and_the_late_request_is_skipped() -> None:
    gate = Gate()
    seen: list[list[str]] = []

    def predict(texts: list[str]) -> list[str]:
        seen.append(list(texts))
        return gate(texts)

    batcher: DynamicBatcher[str] = DynamicBatcher(
        predict, max_batch_size=1, max_wait_seconds=0, timeout=0.3
    )
    batcher.start()
    blocked = asyncio.create_task(batcher.submit(["block"]))
    await gate.running()
    with pytest.raises(BatcherBusyError, match=r"no answer within 0\.3s"):
        await batcher.submit(["late"])
    gate.release.set()
    with pytest.raises(BatcherBusyError):
        await blocked  # it also waited past its deadline
    assert (await batcher.submit(["next"])).results == ["NEXT"]
    await batcher.close()
    assert ["late"] not in seen  # its caller had gone: no model time spent on it


@pytest.mark.asyncio
async def test_a_failing_observer_does_not_kill_the_worker() -> None:
    def observer(_size: int, _seconds: float) -> None:
        raise RuntimeError("metrics broke")

    batcher: DynamicBatcher[str] = DynamicBatcher(upper, max_wait_seconds=0, on_batch=observer)
    batcher.start()
    for text in ("a", "b", "c"):
        result = await asyncio.wait_for(batcher.submit([text]), 5)
        assert result.results == [text.upper()]
    assert batcher.alive
    await batcher.close()


@pytest.mark.asyncio
async def test_the_worker_restarts_after_a_crash_and_is_marked_dead_when_it_keeps_crashing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batcher: DynamicBatcher[str] = DynamicBatcher(upper, max_wait_seconds=0, max_restarts=2)
    original = batcher._take_batch
    crashes = iter([True, False, True, True, True])

    def take() -> list[_Item[str]]:
        if next(crashes, True):
            raise RuntimeError("bookkeeping bug")
        return original()

    monkeypatch.setattr(batcher, "_take_batch", take)
    batcher.start()
    # The first crash leaves the request queued; the restarted worker serves it.
    assert (await asyncio.wait_for(batcher.submit(["x"]), 5)).results == ["X"]
    assert batcher.alive
    with pytest.raises(BatcherClosedError, match="inference worker stopped"):
        await asyncio.wait_for(batcher.submit(["y"]), 5)
    assert not batcher.alive and "bookkeeping bug" in str(batcher.failed)
    with pytest.raises(BatcherClosedError, match="inference worker stopped"):
        await batcher.submit(["z"])
    await asyncio.wait_for(batcher.close(), 5)
