"""The dynamic batcher under failure and overload, without HTTP or a model: one bad
request in a batch fails alone, the queue is bounded, a caller's wait has a deadline, and
the worker is supervised (restarted after a crash, marked dead when it keeps crashing)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from bertops.server.batcher import BatcherBusyError, BatcherClosedError, DynamicBatcher


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

    def take() -> list[object]:
        if next(crashes, True):
            raise RuntimeError("bookkeeping bug")
        return original()  # type: ignore[return-value]

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
