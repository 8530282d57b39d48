"""How the gateway refuses a request, in one shape: :class:`Refusal` carries the status,
the reason (the label of the ``feedback_rejected`` metric) and the message, and answers
the client with the headers that status calls for.

Made by the feedback access checks (:mod:`bertops.server.gateway.access`), by the body
reader (:mod:`bertops.server.gateway.bodies`) for bodies too large or too slow, and by the
feedback endpoint (:mod:`bertops.server.gateway.feedback`) for feedback it cannot take.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.responses import JSONResponse, Response


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused; :meth:`response` answers the client."""

    status: int
    reason: str
    message: str
    retry_after: int | None = None
    close: bool = False
    """Close the connection: the rest of the body was not read."""
    details: dict[str, Any] = field(default_factory=dict)
    """More fields of the JSON answer (e.g. the unknown request ids)."""

    def response(self) -> Response:
        headers = {}
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="bertops-feedback"'
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        if self.close:
            headers["connection"] = "close"
        body = {"error": self.message, **self.details}
        return JSONResponse(body, status_code=self.status, headers=headers)
