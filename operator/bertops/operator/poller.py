"""The poller: re-reconciles bertops objects when they need another look, and only then.

Each reconcile says when its object needs the next look (seconds), or None when only a
change can move it (a settled dataset, training or model): settled objects are never
polled, so an idle operator makes no API requests for them. A step that runs is looked
at every ``interval`` seconds; a BertDeployment at the delay its rollout and drift checks
computed. A watch event makes a settled object due at once (a scheduled one keeps its
look, since the event is most often our own status patch, unless the object was just
created or its spec changed); an event on a BertModel also wakes the BertDeployments of
its namespace (their selection may change). Due objects go to a pool of workers, one
object to one worker at a time.

kopf's own timers would poll too, but every kopf timer puts a finalizer on the object
(blocking deletion whenever the operator is missing) and ticks whether or not anything
runs. The handlers feed this poller from kopf's low-level event stream (which needs no
finalizer) and start and stop it with the operator
(see :func:`bertops.operator.handlers.build_registry`).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # kind, namespace, name
# Kinds whose events wake the BertDeployments of the same namespace.
WAKES_DEPLOYMENTS = {"BertModel"}


class Poller:
    def __init__(
        self,
        reconcile: Callable[[str, str, str], float | None],
        interval: float,
        clock: Callable[[], float] = time.monotonic,
        workers: int = 8,
    ) -> None:
        self.reconcile = reconcile  # returns the seconds until the next look, None: settled
        self.interval = interval
        self.workers = max(1, workers)
        self.clock = clock
        self._known: set[Key] = set()
        self._due: dict[Key, float] = {}  # key -> when it is due; absent: settled
        self._heap: list[tuple[float, Key]] = []  # may hold stale entries (checked on pop)
        self._errors: dict[Key, str] = {}  # the last failure logged per object
        self._busy: set[Key] = set()  # being looked at by a worker now
        self._again: set[Key] = set()  # became due again while busy: looked at once more
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- feeding -------------------------------------------------------------------------------

    def track(
        self,
        kind: str,
        namespace: str,
        name: str,
        deleted: bool = False,
        handled: bool = False,
        changed: bool = False,
    ) -> None:
        """An object seen in a watch event (forgotten once it is deleted). It is due at
        once unless a look is already scheduled (it will come within an interval, and
        the event is most often our own status patch); ``changed``: due at once even
        then (created, listed at start-up, or its spec changed); ``handled``: a kopf
        handler reconciles it for this event (creation, a resumed listing), so the
        poller's look is only the safety net one interval later."""
        key = (kind, namespace, name)
        with self._wake:
            if deleted:
                self._known.discard(key)
                self._due.pop(key, None)
                self._errors.pop(key, None)
                return
            self._known.add(key)
            if handled:
                self._schedule(key, self.interval)
            elif changed or key not in self._due:
                self._schedule(key, 0.0)
            if kind in WAKES_DEPLOYMENTS:
                for other in self._known:
                    if other[0] == "BertDeployment" and other[1] == namespace:
                        self._schedule(other, 0.0)
            self._wake.notify()

    def _schedule(self, key: Key, delay: float) -> None:
        """Due after ``delay`` unless it is already due sooner (caller holds the lock)."""
        at = self.clock() + delay
        if key in self._due and self._due[key] <= at:
            return
        self._due[key] = at
        heapq.heappush(self._heap, (at, key))

    def known(self) -> list[Key]:
        with self._wake:
            return sorted(self._known)

    def due(self) -> list[Key]:
        """Objects waiting for a look (settled ones are not)."""
        with self._wake:
            return sorted(self._due)

    # -- polling -------------------------------------------------------------------------------

    def _take_due(self) -> list[Key]:
        """Pop every key due now (caller holds the lock)."""
        now, taken = self.clock(), []
        while self._heap and self._heap[0][0] <= now:
            at, key = heapq.heappop(self._heap)
            if self._due.get(key) == at:  # not a stale entry
                del self._due[key]
                taken.append(key)
        return taken

    def poll_once(self) -> int:
        """Reconcile everything due now and wait for those looks (tests and one-shot
        callers; the operator runs :meth:`start`); returns how many were handed out."""
        # The lock is let go first, then the pool waits for the looks (they take it).
        with (
            ThreadPoolExecutor(self.workers, thread_name_prefix="bertops-poll") as pool,
            self._wake,
        ):
            return self._dispatch(pool)

    def _dispatch(self, pool: ThreadPoolExecutor) -> int:
        """Hand each object due now to a worker (a reconcile mostly waits on the API
        server or a process start, so a slow look holds up no other), never the same
        object to two workers at once: one due while busy gets one more look after.
        Caller holds the lock; returns how many were handed out."""
        handed = 0
        for key in self._take_due():
            if key in self._busy:
                self._again.add(key)
            else:
                self._busy.add(key)
                pool.submit(self._work, key)
                handed += 1
        return handed

    def _look_and_reschedule(self, key: Key) -> None:
        if self._stop.is_set():
            return
        delay = self._look(key)
        with self._wake:
            if delay is not None and key in self._known:
                self._schedule(key, delay)
                self._wake.notify()  # the scheduling thread may sleep with nothing due

    def _look(self, key: Key) -> float | None:
        try:
            delay = self.reconcile(*key)
        except Exception as error:  # one object's trouble must not stop the others
            # Logged once per distinct failure, not at every look; looked at again later.
            if self._errors.get(key) != str(error):
                self._errors[key] = str(error)
                log.warning("poll of %s %s/%s failed: %s", *key, error)
            return self.interval
        self._errors.pop(key, None)
        return delay

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="bertops-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """Dispatch each object the moment it is due; sleep until the next one is."""
        with ThreadPoolExecutor(self.workers, thread_name_prefix="bertops-poll") as pool:
            while not self._stop.is_set():
                with self._wake:
                    self._dispatch(pool)
                    if self._stop.is_set():
                        return
                    wait = self._heap[0][0] - self.clock() if self._heap else None
                    if wait is None or wait > 0:
                        self._wake.wait(timeout=None if wait is None else wait)

    def _work(self, key: Key) -> None:
        try:
            self._look_and_reschedule(key)
        finally:
            with self._wake:
                self._busy.discard(key)
                if key in self._again:
                    self._again.discard(key)
                    if key in self._known:
                        self._schedule(key, 0.0)
                        self._wake.notify()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
