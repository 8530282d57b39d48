"""The knobs of one model server (:class:`ServerSettings`): batching, request limits,
the prediction log, and the overload protection (body ceiling, queue bound, timeouts,
uvicorn's concurrency limit), with the derived defaults in one place.

Built by ``bertops server serve`` (:mod:`bertops.server.cli`) from its options, or from a
BertDeployment's ``serving`` block by :meth:`ServerSettings.from_serving`; read by
:mod:`bertops.server.app`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertops.api.deployment import Serving
from bertops.server.predictionlog import Privacy
from bertops.server.protocol import DEFAULT_MAX_BODY_BYTES

# The serving block's defaults are the server's: one place to change them (bertops.api).
_SERVING_DEFAULTS = Serving()


@dataclass
class ServerSettings:
    """The knobs of one server; :meth:`from_serving` takes them from a BertDeployment."""

    max_batch_size: int = _SERVING_DEFAULTS.max_batch_size
    max_batch_wait_ms: float = _SERVING_DEFAULTS.max_batch_wait_ms
    max_texts_per_request: int = _SERVING_DEFAULTS.max_texts_per_request
    max_chars: int = _SERVING_DEFAULTS.max_chars
    prediction_log: Privacy = _SERVING_DEFAULTS.prediction_log
    prediction_log_path: str | Path | None = None
    """A local path, or a URI in an object store (shipped there: :mod:`bertops.server.logship`)."""
    prediction_log_max_bytes: int = 64 << 20
    prediction_log_backups: int = 5
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Absolute ceiling of a request body (413 above it)."""
    request_timeout_seconds: float = 30.0
    """Longest time to read a body, and to wait for the answer of the model (then 408/503)."""
    max_queued_texts: int | None = None
    """Texts that may wait for the model (then 503 + Retry-After); None: derived."""
    limit_concurrency: int | None = None
    """Connections + requests uvicorn serves at once (then 503); None: derived."""
    keep_alive_seconds: float = 5.0
    """How long an idle keep-alive connection stays open."""

    @property
    def queue_limit(self) -> int:
        # Enough for 16 full batches, and always for at least one largest request.
        if self.max_queued_texts is not None:
            return max(self.max_queued_texts, self.max_texts_per_request)
        return max(16 * self.max_batch_size, self.max_texts_per_request)

    @property
    def concurrency_limit(self) -> int:
        # Every queued request holds at least one text, so more requests than the queue
        # holds are refused anyway; 64 more leave room for health checks and /metrics.
        if self.limit_concurrency is not None:
            return self.limit_concurrency
        return self.queue_limit + 64

    @classmethod
    def from_serving(cls, serving: Serving, **overrides: Any) -> ServerSettings:
        values: dict[str, Any] = {
            "max_batch_size": serving.max_batch_size,
            "max_batch_wait_ms": serving.max_batch_wait_ms,
            "max_texts_per_request": serving.max_texts_per_request,
            "max_chars": serving.max_chars,
            "prediction_log": serving.prediction_log,
        }
        values.update(overrides)
        return cls(**values)
