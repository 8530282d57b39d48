"""Bounded bodies for the gateway: every request body (proxied, ``/feedback``, admin) and
every backend answer is read as a stream and refused as soon as it passes its limit, so
a client cannot make the gateway buffer an unbounded body (a declared Content-Length
over the limit is refused before a byte is read).

Used by :mod:`bertops.server.gateway.app`, :mod:`~bertops.server.gateway.feedback` and
:mod:`~bertops.server.gateway.admin`.
"""

from __future__ import annotations

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse

MAX_PROXY_BODY_BYTES = 16 << 20  # a large OIP batch of texts is a few MB
MAX_ANSWER_BYTES = 64 << 20  # answers carry class probabilities for every text
MAX_FEEDBACK_BYTES = 1 << 20
MAX_ADMIN_BYTES = 1 << 20


class BodyTooLargeError(Exception):
    def __init__(self, limit: int, declared: int | None = None) -> None:
        self.limit = limit
        what = f"of {declared} bytes " if declared is not None else ""
        super().__init__(f"body {what}exceeds the limit of {limit} bytes")


def too_large(error: BodyTooLargeError) -> JSONResponse:
    # Connection: close, because the rest of the body was not read.
    return JSONResponse({"error": str(error)}, status_code=413, headers={"connection": "close"})


async def read_body(request: Request, limit: int) -> bytes:
    """The whole request body, or BodyTooLargeError once it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(limit, int(declared))
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > limit:
            raise BodyTooLargeError(limit)
    return bytes(chunks)


async def read_answer(response: httpx.Response, limit: int) -> bytes:
    """A streamed backend answer's body, or BodyTooLargeError once it passes ``limit``."""
    chunks = bytearray()
    async for chunk in response.aiter_bytes():
        chunks += chunk
        if len(chunks) > limit:
            raise BodyTooLargeError(limit)
    return bytes(chunks)
