"""Who may send ground-truth feedback to the gateway, and how much: feedback can roll a
canary back and becomes training data, so it is a privilege, not a side effect of being
able to reach the gateway.

- **Credentials**: a folder (the BertDeployment's ``serving.feedback.credentialsSecret``
  mounted as a volume, or written by the local runtime) where each file names a client
  and holds its bearer token. It is re-read every few seconds, so a Secret edit adds or
  revokes a client without a restart. A request names itself with
  ``Authorization: Bearer <token>``; tokens are compared in constant time.
- **Anonymous** feedback (no credential) is refused unless switched on; anonymous clients
  are told apart by their address.
- **Budgets**: each client may send so many labels a minute and so many request bytes an
  hour (sliding windows of the ``limits`` library, in memory: each replica counts its own
  clients, and ClientIP affinity keeps a client on one replica). Over budget answers 429
  with ``Retry-After``.

Used by :class:`bertops.server.gateway.feedback.FeedbackDesk`, which asks
:meth:`FeedbackAccess.identify` before it reads a body and :meth:`FeedbackAccess.charge`
once it knows how many labels it holds; the client's name goes into each feedback row.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

from limits import RateLimitItemPerHour, RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from starlette.requests import Request

from bertops.server.gateway.refusal import Refusal

log = logging.getLogger(__name__)

MIN_TOKEN_CHARS = 16  # shorter tokens are guessable: such a client is left out (and said)
RELOAD_SECONDS = 5.0
ANONYMOUS = "anonymous"


def read_credentials(folder: Path) -> dict[str, bytes]:
    """Client name -> SHA-256 of its token, from a folder of one file per client (a Secret
    volume's ``..data`` entries and other dot files are skipped)."""
    found: dict[str, bytes] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        token = path.read_text(encoding="utf-8", errors="replace").strip()
        if len(token) < MIN_TOKEN_CHARS:
            log.warning(
                "feedback client %r left out: its token is shorter than %d characters",
                path.name,
                MIN_TOKEN_CHARS,
            )
            continue
        found[path.name] = hashlib.sha256(token.encode()).digest()
    return found


class FeedbackAccess:
    """Identifies the client of a feedback request and charges its budgets."""

    def __init__(
        self,
        credentials: Path | None = None,
        *,
        anonymous: bool = False,
        labels_per_minute: int = 600,
        bytes_per_hour: int = 16 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.credentials = credentials
        self.anonymous = anonymous
        self.clock = clock
        self._known: dict[str, bytes] = {}
        self._read_at: float | None = None
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._labels = RateLimitItemPerMinute(labels_per_minute)
        self._bytes = RateLimitItemPerHour(bytes_per_hour)

    @classmethod
    def open(cls) -> FeedbackAccess:
        """Anyone may send feedback, within the default budgets (tests, local trials)."""
        return cls(anonymous=True)

    @property
    def enabled(self) -> bool:
        return self.anonymous or self.credentials is not None

    def _clients(self) -> dict[str, bytes]:
        now = self.clock()
        if self.credentials is not None and (
            self._read_at is None or now - self._read_at >= RELOAD_SECONDS
        ):
            self._read_at = now
            try:
                self._known = read_credentials(self.credentials)
            except OSError as error:  # keep the last good set; a Secret swap is atomic
                log.warning("cannot read feedback credentials %s: %s", self.credentials, error)
        return self._known

    def identify(self, request: Request) -> str | Refusal:
        """The client's name (``anonymous:<address>`` without a credential), or why not."""
        if not self.enabled:
            return Refusal(
                403,
                "forbidden",
                "feedback is off for this deployment: name a Secret of client tokens in "
                "spec.serving.feedback.credentialsSecret (or set anonymous: true)",
            )
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if not token:
            if self.anonymous:
                address = request.client.host if request.client else "unknown"
                return f"{ANONYMOUS}:{address}"
            return Refusal(401, "unauthenticated", "feedback needs Authorization: Bearer <token>")
        digest = hashlib.sha256(token.strip().encode()).digest()
        match = None
        for name, known in self._clients().items():  # every entry compared: no early exit
            if hmac.compare_digest(digest, known) and scheme.lower() == "bearer":
                match = name
        if match is None:
            return Refusal(401, "unauthenticated", "feedback credential not recognised")
        return match

    def charge(self, client: str, labels: int, body_bytes: int) -> Refusal | None:
        """Spend ``labels`` and ``body_bytes`` of the client's budgets; nothing is spent
        when either would be exceeded."""
        checks = ((self._labels, max(labels, 1), "labels"), (self._bytes, body_bytes, "bytes"))
        for item, cost, what in checks:
            if cost > item.amount or not self._limiter.test(item, client, cost=cost):
                stats = self._limiter.get_window_stats(item, client)
                wait = max(1, math.ceil(stats.reset_time - time.time()))
                return Refusal(
                    429,
                    "rate_limited",
                    f"feedback budget spent: at most {item.amount} {what} per "
                    f"{item.GRANULARITY.name} for each client; try again later",
                    retry_after=wait,
                )
        for item, cost, _ in checks:
            self._limiter.hit(item, client, cost=cost)
        return None
