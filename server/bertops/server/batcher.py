"""Dynamic batching for the model server: concurrent requests wait together (up to a
maximum number of texts or a maximum wait after the oldest one arrived), run as one
model call in a dedicated worker thread, and each caller gets back its own results.

Created and closed by :mod:`bertops.server.app`'s lifespan; ``submit`` is awaited by the
request handlers. It knows nothing about HTTP or the model's type: it takes a blocking
``predict(texts) -> results`` callable, so tests and other models can reuse it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

R = TypeVar("R")


class BatcherClosedError(Exception):
    """The server is shutting down and takes no new work."""


@dataclass
class _Item(Generic[R]):
    texts: Sequence[str]
    future: asyncio.Future[tuple[list[R], float, float]]
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class BatchResult(Generic[R]):
    results: list[R]
    queue_seconds: float
    """Longest wait of this request's chunks between arrival and the start of their batch."""
    inference_seconds: float
    """Sum of the model time of the batches this request rode in."""


class DynamicBatcher(Generic[R]):
    """Groups texts from concurrent callers into batches of at most ``max_batch_size``.

    A request larger than the maximum is split into chunks, each queued in order; a
    request is never split across a batch only because it would overflow it: it waits for
    the next batch instead, so caller order is kept. One inference thread: the model
    itself uses the cores (torch intra-op threads), and while it runs, the next batch
    fills up.
    """

    def __init__(
        self,
        predict: Callable[[list[str]], list[R]],
        max_batch_size: int = 32,
        max_wait_seconds: float = 0.005,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait_seconds = max_wait_seconds
        self._on_batch = on_batch
        self._pending: deque[_Item[R]] = deque()
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="bertops-inference")
        self._closing = False

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._wakeup = asyncio.Event()
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    @property
    def queued_texts(self) -> int:
        return sum(len(item.texts) for item in self._pending)

    async def submit(self, texts: Sequence[str]) -> BatchResult[R]:
        if self._closing or self._wakeup is None:
            raise BatcherClosedError("the model server is shutting down")
        loop = asyncio.get_running_loop()
        items = []
        for start in range(0, len(texts), self.max_batch_size):
            item: _Item[R] = _Item(texts[start:start + self.max_batch_size], loop.create_future())
            items.append(item)
            self._pending.append(item)
        self._wakeup.set()
        outcomes = await asyncio.gather(*(item.future for item in items))
        results: list[R] = []
        for chunk, _, _ in outcomes:
            results.extend(chunk)
        return BatchResult(results, max(o[1] for o in outcomes), sum(o[2] for o in outcomes))

    async def close(self) -> None:
        """Take no new work, finish everything already queued, stop the thread."""
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._worker is not None:
            await self._worker
        self._executor.shutdown(wait=True)

    def _take_batch(self) -> list[_Item[R]]:
        batch: list[_Item[R]] = []
        size = 0
        while self._pending and size + len(self._pending[0].texts) <= self.max_batch_size:
            item = self._pending.popleft()
            batch.append(item)
            size += len(item.texts)
        return batch

    async def _wait_for_fill(self) -> None:
        assert self._wakeup is not None
        deadline = self._pending[0].enqueued + self.max_wait_seconds
        while self.queued_texts < self.max_batch_size and not self._closing:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._wait_for_fill()
            batch = self._take_batch()
            texts = [text for item in batch for text in item.texts]
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self._predict, texts)
            except Exception as error:
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            elapsed = time.perf_counter() - started
            if self._on_batch is not None:
                self._on_batch(len(texts), elapsed)
            offset = 0
            for item in batch:
                chunk = results[offset:offset + len(item.texts)]
                offset += len(item.texts)
                if not item.future.done():  # the caller may have gone away
                    item.future.set_result((chunk, started - item.enqueued, elapsed))
