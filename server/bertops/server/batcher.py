"""Dynamic batching for the model server: concurrent requests wait together (up to a
maximum number of texts or a maximum wait after the oldest one arrived), run as one
model call in a dedicated worker thread, and each caller gets back its own results.
A lone request that finds the model idle runs at once: waiting for company only pays
when company is coming (see :attr:`DynamicBatcher.dispatch_when_idle`).

Created and closed by :mod:`bertops.server.app`'s lifespan; ``submit`` is awaited by the
request handlers. It knows nothing about HTTP or the model's type: it takes a blocking
``predict(texts) -> results`` callable, so tests and other models can reuse it.

Hardening: the queue is bounded (a full queue refuses at once, with a retry hint),
``submit`` has a deadline, a batch that fails is re-run request by request so one bad
request cannot fail its neighbours, and the worker task is supervised: it restarts after
an unexpected error and is marked dead (``alive`` false, readiness fails) after
``max_restarts`` crashes in a row.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

R = TypeVar("R")
T = TypeVar("T")

log = logging.getLogger(__name__)


class BatcherUnavailableError(Exception):
    """The batcher cannot take this work now; ``retry_after`` (seconds) when a later try
    may succeed."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BatcherClosedError(BatcherUnavailableError):
    """The server is shutting down, or its inference worker died: it takes no new work."""


class BatcherBusyError(BatcherUnavailableError):
    """The queue is full, or the request waited past its deadline."""


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
    fills up. At most ``max_queued_texts`` texts wait (a request is always admitted into
    an empty queue, so one of any size can run); ``timeout`` bounds a caller's wait.
    """

    dispatch_when_idle: bool = True
    """When the model is idle and one request is queued, run it at once instead of
    waiting ``max_wait_seconds`` for company. The fill wait still applies when several
    requests are queued (a burst: more are probably on their way) or the previous batch
    carried several (their callers tend to come back together; a lone one going first
    would split them into small batches). Under load little changes: requests queue
    while a batch runs, and by the time the model is free their wait has mostly passed.
    At concurrency 1 on a 38 ms model the 5 ms wait was pure latency. False restores the
    wait before every batch (the benchmark's A/B switch)."""

    def __init__(
        self,
        predict: Callable[[list[str]], list[R]],
        max_batch_size: int = 32,
        max_wait_seconds: float = 0.005,
        on_batch: Callable[[int, float], None] | None = None,
        *,
        max_queued_texts: int = 1024,
        timeout: float | None = 30.0,
        max_restarts: int = 3,
        dispatch_when_idle: bool | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if dispatch_when_idle is not None:
            self.dispatch_when_idle = dispatch_when_idle
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait_seconds = max_wait_seconds
        self.max_queued_texts = max_queued_texts
        self.timeout = timeout
        self.max_restarts = max_restarts
        self._on_batch = on_batch
        self._pending: deque[_Item[R]] = deque()
        self._queued = 0
        self._current: list[_Item[R]] = []
        self._last_batch_requests = 0
        self._batch_seconds = max_wait_seconds
        self._crashes = 0
        self.failed: str | None = None
        """Why the worker stopped for good (None while it runs)."""
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="bertops-inference")
        self._closing = False

    def start(self) -> None:
        """Start the (supervised) worker on the running event loop."""
        self._wakeup = asyncio.Event()
        self._worker = asyncio.get_running_loop().create_task(self._supervise(), name="batcher")

    async def run_on_inference_thread(self, call: Callable[[], T]) -> T:
        """Run ``call`` on the thread that runs every batch. The server loads and warms
        up its model there, so all its torch work comes from one thread: warm-up batches
        on another thread left a second OpenMP team that made each later batch-1 call
        1.4-2x slower (measured: 26-38 ms against 18 ms, MiniLM-L6, seq 64, 2 threads)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    @property
    def alive(self) -> bool:
        """True while the worker runs and can take work (readiness follows this)."""
        return self._worker is not None and not self._worker.done() and self.failed is None

    @property
    def queued_texts(self) -> int:
        return self._queued

    def retry_after(self) -> float:
        """A guess in seconds of how long until the queue drained (batches waiting x the
        last batch's time), at least 1: HTTP's Retry-After counts whole seconds."""
        batches = self._queued / self.max_batch_size + 1
        return max(1.0, batches * max(self._batch_seconds, self.max_wait_seconds))

    async def submit(self, texts: Sequence[str]) -> BatchResult[R]:
        if self.failed is not None:
            raise BatcherClosedError(f"the inference worker stopped: {self.failed}")
        if self._closing or self._wakeup is None or not self.alive:
            raise BatcherClosedError("the model server is shutting down")
        if self._queued and self._queued + len(texts) > self.max_queued_texts:
            raise BatcherBusyError(
                f"the server is busy: {self._queued} texts queued, at most "
                f"{self.max_queued_texts}; retry later",
                self.retry_after(),
            )
        loop = asyncio.get_running_loop()
        items = []
        for start in range(0, len(texts), self.max_batch_size):
            item: _Item[R] = _Item(texts[start : start + self.max_batch_size], loop.create_future())
            items.append(item)
            self._pending.append(item)
            self._queued += len(item.texts)
        self._wakeup.set()
        return await self._collect(items)

    async def _collect(self, items: list[_Item[R]]) -> BatchResult[R]:
        futures = [item.future for item in items]
        try:
            _, late = await asyncio.wait(futures, timeout=self.timeout)
        finally:
            # Timed out, or the caller went away: the worker skips cancelled items.
            for future in futures:
                future.cancel()
        if late:
            raise BatcherBusyError(
                f"no answer within {self.timeout:g}s; the server is overloaded, retry later",
                self.retry_after(),
            )
        errors = [f.exception() for f in futures]  # retrieve all, raise the first
        for error in errors:
            if error is not None:
                raise error
        outcomes = [f.result() for f in futures]
        results: list[R] = []
        for chunk, _, _ in outcomes:
            results.extend(chunk)
        return BatchResult(results, max(o[1] for o in outcomes), sum(o[2] for o in outcomes))

    async def close(self, drain_seconds: float | None = 60.0) -> None:
        """Take no new work, finish what is queued (within ``drain_seconds``), stop the
        thread."""
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()
        worker = self._worker
        drained = True
        if worker is not None and not worker.done():
            try:
                await asyncio.wait_for(asyncio.shield(worker), drain_seconds)
            except TimeoutError:
                log.error(
                    "the batcher did not drain within %ss; failing what is left", drain_seconds
                )
                worker.cancel()
                drained = False
        self._fail_all(BatcherClosedError("the model server is shutting down"))
        # A model call stuck in the thread must not hold shutdown hostage.
        self._executor.shutdown(wait=drained, cancel_futures=True)

    # -- worker ------------------------------------------------------------------------

    async def _supervise(self) -> None:
        while True:
            try:
                await self._run()
                return
            except Exception as error:
                # A bug outside the per-batch guard (bookkeeping, a callback): fail the
                # batch in hand, then restart, unless it keeps happening.
                self._crashes += 1
                log.exception("inference worker crashed (%d in a row)", self._crashes)
                self._fail(self._current, error)
                self._current = []
                if self._crashes > self.max_restarts:
                    self.failed = f"{type(error).__name__}: {error}"
                    log.error(
                        "inference worker stopped after %d crashes; the server is not ready",
                        self._crashes,
                    )
                    self._fail_all(
                        BatcherClosedError(f"the inference worker stopped: {self.failed}")
                    )
                    return

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            while not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            # No batch runs here (one worker): a lone request goes at once, unless
            # company is likely (see dispatch_when_idle).
            company = len(self._pending) > 1 or self._last_batch_requests > 1
            if company or not self.dispatch_when_idle:
                await self._wait_for_fill()
            self._current = self._take_batch()
            if self._current:
                await self._serve(self._current)
                self._last_batch_requests = len(self._current)
                self._crashes = 0
            self._current = []

    def _take_batch(self) -> list[_Item[R]]:
        batch: list[_Item[R]] = []
        size = 0
        while self._pending:
            item = self._pending[0]
            if not item.future.done() and size + len(item.texts) > self.max_batch_size:
                break
            self._pending.popleft()
            self._queued -= len(item.texts)
            if item.future.done():  # its caller timed out or went away
                continue
            batch.append(item)
            size += len(item.texts)
        return batch

    async def _wait_for_fill(self) -> None:
        assert self._wakeup is not None
        deadline = self._pending[0].enqueued + self.max_wait_seconds
        while self._queued < self.max_batch_size and not self._closing:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    async def _serve(self, batch: list[_Item[R]]) -> None:
        """One model call for the batch; when it fails, each request again on its own,
        so only the request that makes the model fail gets the error."""
        texts = [text for item in batch for text in item.texts]
        started = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._predict, texts
            )
            if len(results) != len(texts):
                raise RuntimeError(
                    f"the model returned {len(results)} results for {len(texts)} texts"
                )
        except Exception as error:
            if len(batch) == 1:
                self._fail(batch, error)
                return
            log.warning(
                "a batch of %d requests failed (%s: %s); retrying them one by one",
                len(batch),
                type(error).__name__,
                error,
            )
            for item in batch:
                if not item.future.done():
                    await self._serve([item])
            return
        elapsed = time.perf_counter() - started
        self._batch_seconds = elapsed
        self._report(len(texts), elapsed)
        offset = 0
        for item in batch:
            chunk = results[offset : offset + len(item.texts)]
            offset += len(item.texts)
            if not item.future.done():  # the caller may have gone away
                item.future.set_result((chunk, started - item.enqueued, elapsed))

    def _report(self, size: int, seconds: float) -> None:
        if self._on_batch is None:
            return
        try:
            self._on_batch(size, seconds)
        except Exception:  # metrics must never fail a request
            log.exception("batch observer failed")

    @staticmethod
    def _fail(items: list[_Item[R]], error: BaseException) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(error)

    def _fail_all(self, error: BaseException) -> None:
        self._fail(list(self._pending), error)
        self._pending.clear()
        self._queued = 0
