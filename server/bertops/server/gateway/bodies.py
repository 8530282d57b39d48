"""Bounded bodies for the gateway: every request body (proxied, ``/feedback``, admin) and
every backend answer is read as a stream and refused as soon as it passes its limit, so
a client cannot make the gateway buffer an unbounded body (a declared Content-Length
over the limit is refused before a byte is read), nor hold one open forever: a body
must arrive within ``BODY_READ_SECONDS``.

Used by :mod:`bertops.server.gateway.app`, :mod:`~bertops.server.gateway.feedback` and
:mod:`~bertops.server.gateway.admin`.
"""

from __future__ import annotations

import asyncio

import httpx
from starlette.requests import Request

from bertops.api.limits import request_body_limit
from bertops.server.gateway.refusal import Refusal

# The largest body a model server with the default limits takes (64 texts of 5000
# characters): the gateway never buffers more than its servers would accept. The
# operator passes each deployment's own figure (--max-body-bytes).
MAX_PROXY_BODY_BYTES = request_body_limit(64, 5000)
BODY_READ_SECONDS = 30.0  # a slow or stalled upload holds a slot and its bytes no longer
MAX_ANSWER_BYTES = 64 << 20  # answers carry class probabilities for every text
MAX_FEEDBACK_BYTES = 1 << 20
MAX_ADMIN_BYTES = 1 << 20


class BodyRefusedError(Exception):
    """A request body the gateway will not take; :attr:`refusal` answers the client."""

    status = 400
    reason = "refused"  # the feedback_rejected metric's label

    @property
    def refusal(self) -> Refusal:
        # Connection: close, because the rest of the body was not read.
        return Refusal(self.status, self.reason, str(self), close=True)


class BodyTooLargeError(BodyRefusedError):
    status, reason = 413, "too_large"

    def __init__(self, limit: int, declared: int | None = None) -> None:
        self.limit = limit
        what = f"of {declared} bytes " if declared is not None else ""
        super().__init__(f"body {what}exceeds the limit of {limit} bytes")


class BodyTimeoutError(BodyRefusedError):
    status, reason = 408, "too_slow"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"the request body did not arrive within {seconds:g} s")


async def read_body(request: Request, limit: int, seconds: float = BODY_READ_SECONDS) -> bytes:
    """The whole request body, or BodyTooLargeError once it passes ``limit`` bytes, or
    BodyTimeoutError when it has not all arrived after ``seconds``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(limit, int(declared))
    chunks = bytearray()
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                chunks += chunk
                if len(chunks) > limit:
                    raise BodyTooLargeError(limit)
    except TimeoutError as error:
        raise BodyTimeoutError(seconds) from error
    return bytes(chunks)


async def read_answer(response: httpx.Response, limit: int) -> bytes:
    """A streamed backend answer's body, or BodyTooLargeError once it passes ``limit``."""
    chunks = bytearray()
    async for chunk in response.aiter_bytes():
        chunks += chunk
        if len(chunks) > limit:
            raise BodyTooLargeError(limit)
    return bytes(chunks)
