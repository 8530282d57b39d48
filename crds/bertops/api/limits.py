"""The largest request body a model server can need, from its serving limits: the one
rule the server (:class:`bertops.server.protocol.Limits`) refuses bodies by and the
operator sizes the gateway's body limit with (the gateway should never buffer more than
its servers would take). Pure arithmetic; imported by both sides."""

from __future__ import annotations

DEFAULT_MAX_BODY_BYTES = 4 << 20  # the ceiling when nothing else is said
# Requests a gateway replica serves at once (uvicorn answers 503 past it): at most this
# many bodies of at most request_body_limit() bytes are held, which with the answers fits
# the gateway container's memory limit (512Mi).
GATEWAY_CONCURRENCY = 32


def request_body_limit(
    max_texts: int, max_chars: int, ceiling: int = DEFAULT_MAX_BODY_BYTES
) -> int:
    """Bytes a valid request of ``max_texts`` texts of ``max_chars`` characters can take:
    UTF-8 is at most 4 bytes a character and JSON escaping up to 6 (\\uXXXX), plus room for
    the envelope; never more than ``ceiling`` (at the CRD maxima it would be about 24 GB)."""
    needed = max_texts * (max_chars * 6 + 64) + 64 * 1024
    return min(needed, ceiling)
