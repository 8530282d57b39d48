"""What the gateway remembers of its answers, so that feedback can score them: request id
-> :class:`Served`, bounded by age and by two byte budgets.

- **Answers** (ids, predicted labels, pairs, early feedback) within ``max_bytes``: past
  it the oldest answers go, and feedback for them then gets 404.
- **Texts** (kept only while a feedback log wants training rows) within
  ``max_text_bytes``, apart: past it the oldest answers lose their texts, not their place.
  So a flood of maximum-size requests never pushes out the ids that genuine feedback
  needs; it only costs those answers their training rows (counted as
  ``feedback_log_dropped``). An answer costs about 400 bytes plus its labels, so the
  default 64 MiB holds some 15,000 answers of 64 texts, or 100,000 of one.

Used by :class:`bertops.server.gateway.app.Gateway` (``add``), the feedback desk
(``get``, ``keep_early``) and the pairing (``attach``).
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from bertops.api.routes import Backend
from bertops.server.gateway.pairs import PER_LABEL, Pair

# What one remembered answer costs beyond its strings: the dict slot, the dataclass, the
# tuple and set, measured roughly with sys.getsizeof on CPython 3.11.
ENTRY_OVERHEAD = 400


@dataclass
class Served:
    """What the gateway remembers of an answered request, to score feedback on it."""

    variant: str
    backend: Backend
    labels: tuple[str, ...]  # the predicted label of each text, in order
    at: float  # monotonic seconds
    judged: set[int] = field(default_factory=set)  # texts that already got feedback
    texts: tuple[str, ...] | None = None  # kept only for a feedback log
    pair: Pair | None = None  # set by ServedStore.attach when a paired answer arrives
    # Feedback that came before the paired answer (a client labelling at once beats the
    # background call): scored on both models when the pair arrives.
    early: dict[int, str] = field(default_factory=dict)
    expects_pair: bool = False  # a pair call or a shadow mirror was started for it

    @property
    def cost(self) -> int:
        """Bytes of everything but the texts."""
        labels = sum(PER_LABEL + len(label) for label in self.labels)
        pair = self.pair.cost if self.pair is not None else 0
        early = sum(PER_LABEL + len(label) for label in self.early.values())
        return ENTRY_OVERHEAD + labels + pair + early

    @property
    def text_cost(self) -> int:
        # getsizeof is O(1) and counts a wide (non-Latin-1) string's real width.
        return sum(sys.getsizeof(text) for text in self.texts) if self.texts else 0


class ServedStore:
    """Request id -> :class:`Served`, oldest first out; see the module docstring."""

    def __init__(
        self,
        max_bytes: int = 64 << 20,
        window_seconds: float = 3600,
        clock: Callable[[], float] = time.monotonic,
        max_text_bytes: int = 64 << 20,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_text_bytes = max_text_bytes
        self.window_seconds = window_seconds
        self.clock = clock
        self.answer_bytes = 0
        self.text_bytes = 0
        self._entries: OrderedDict[str, Served] = OrderedDict()
        self._texted: OrderedDict[str, None] = OrderedDict()  # ids holding texts, oldest first

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """All the memory remembered answers take, texts included."""
        return self.answer_bytes + self.text_bytes

    def _cost(self, request_id: str, served: Served) -> int:
        return served.cost + len(request_id)

    def _pop_oldest(self) -> None:
        request_id, served = self._entries.popitem(last=False)
        self.answer_bytes -= self._cost(request_id, served)
        self._forget_texts(request_id, served)

    def _forget_texts(self, request_id: str, served: Served) -> None:
        if request_id in self._texted:
            del self._texted[request_id]
            self.text_bytes -= served.text_cost
        served.texts = None

    def expire(self) -> None:
        horizon = self.clock() - self.window_seconds
        while self._entries and next(iter(self._entries.values())).at < horizon:
            self._pop_oldest()

    def add(self, request_id: str, served: Served) -> None:
        cost = self._cost(request_id, served)
        if cost > self.max_bytes:
            return  # larger than the whole budget: cannot be remembered
        if served.text_cost > self.max_text_bytes:
            served.texts = None  # scored when labelled, but no training row
        self.expire()
        self._entries[request_id] = served
        self.answer_bytes += cost
        if served.texts:
            self._texted[request_id] = None
            self.text_bytes += served.text_cost
        while self.answer_bytes > self.max_bytes:
            self._pop_oldest()
        while self.text_bytes > self.max_text_bytes:
            oldest = next(iter(self._texted))
            self._forget_texts(oldest, self._entries[oldest])

    def get(self, request_id: str) -> Served | None:
        self.expire()
        return self._entries.get(request_id)

    def attach(self, request_id: str, pair: Pair) -> dict[int, str] | None:
        """Remember ``pair`` with the request's answer (the budget counts it) and hand
        back the feedback that came before it, to be scored on both models now; None
        when the answer is no longer remembered."""
        served = self.get(request_id)
        if served is None:
            return None
        early, served.early = served.early, {}
        self._update(request_id, served, lambda: setattr(served, "pair", pair))
        return early

    def keep_early(self, request_id: str, served: Served, index: int, truth: str) -> None:
        """Keep a feedback label until the request's paired answer arrives."""
        self._update(request_id, served, lambda: served.early.__setitem__(index, truth))

    def _update(self, request_id: str, served: Served, change: Callable[[], object]) -> None:
        before = self._cost(request_id, served)
        change()
        self.answer_bytes += self._cost(request_id, served) - before
        while self.answer_bytes > self.max_bytes:
            self._pop_oldest()
