"""The poller: re-reconciles every known bertops object at a fixed interval, so running
steps are followed and awaited objects (a dataset, a parent model) are noticed.

kopf's own timers would do this too, but every kopf timer puts a finalizer on the
object, and a finalizer blocks deletion whenever the operator is missing; the kubernetes
runtime needs none (owner references clean up). The handlers feed the poller from
kopf's low-level event stream (which needs no finalizer) and start and stop it with the
operator (see :func:`bertops.operator.handlers.build_registry`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # kind, namespace, name


class Poller:
    def __init__(self, reconcile: Callable[[str, str, str], object], interval: float) -> None:
        self.reconcile = reconcile
        self.interval = interval
        self._known: set[Key] = set()
        self._errors: dict[Key, str] = {}  # the last failure logged per object
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def track(self, kind: str, namespace: str, name: str, deleted: bool = False) -> None:
        """Remember an object seen in a watch event (forget it once it is deleted)."""
        with self._guard:
            if deleted:
                self._known.discard((kind, namespace, name))
                self._errors.pop((kind, namespace, name), None)
            else:
                self._known.add((kind, namespace, name))

    def known(self) -> list[Key]:
        with self._guard:
            return sorted(self._known)

    def poll_once(self) -> None:
        for key in self.known():
            if self._stop.is_set():
                return
            try:
                self.reconcile(*key)
            except Exception as error:  # one object's trouble must not stop the others
                # Logged once per distinct failure, not at every tick.
                if self._errors.get(key) != str(error):
                    self._errors[key] = str(error)
                    log.warning("poll of %s %s/%s failed: %s", *key, error)
            else:
                self._errors.pop(key, None)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="bertops-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll_once()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
