"""The gateway's routing: parse a routes document, the per-request choice of a variant
(by the sticky mode, see :func:`choose`), and the sources routes come from (a file or an
http(s) URL, polled for changes).

The document's types live in :mod:`bertops.api.routes` (the operator writes them, the
gateway reads them) and are re-exported here. :mod:`bertops.server.gateway.app` calls
:func:`choose` per request. pydantic + stdlib + pyyaml + httpx only.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
import yaml

from bertops.api.routes import Backend, Routes, Sticky

Variant = Literal["stable", "canary"]
VARIANTS: tuple[Variant, ...] = ("stable", "canary")
MAX_ROUTES_BYTES = 1 << 20  # a routes document is a few hundred bytes


def parse_routes(text: str | bytes) -> Routes:
    """Routes from YAML or JSON text (JSON is YAML); raises ValueError when invalid."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"routes are not valid YAML/JSON: {error}") from error
    if not isinstance(document, dict):
        raise ValueError("routes must be a mapping with at least 'stable'")
    return Routes.model_validate(document)


def bucket(key: str, salt: str) -> float:
    """A stable position in [0, 100) for a key: sha256, so it is the same in every
    gateway replica and across restarts (Python's hash() is salted per process)."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def choose_variant(
    routes: Routes, key: str | None, override: str | None = None, rng: random.Random | None = None
) -> Variant:
    """Override header first, then the sticky key's bucket, else a random draw.

    The bucket is salted by the canary's name, not its weight: raising the weight from
    10 to 50 keeps everyone already on the canary there, and a new canary draws a fresh
    cohort of users.
    """
    if override == "stable":
        return "stable"
    if override == "canary" and routes.canary is not None:
        return "canary"
    if routes.canary is None or routes.canary_weight <= 0:
        return "stable"
    if routes.canary_weight >= 100:
        return "canary"
    position = bucket(key, routes.canary.name) if key else (rng or random).random() * 100
    return "canary" if position < routes.canary_weight else "stable"


def choose(
    routes: Routes,
    headers: Mapping[str, str],
    cookies: Mapping[str, str],
    rng: random.Random | None = None,
) -> tuple[Variant, str | None]:
    """The variant for one request by the sticky mode, and a new key to set as a cookie
    (None: set none).

    ``none`` reads no key: every request is drawn by weight, so clients that keep
    cookies still spread over both variants as the weight says. ``header`` buckets by
    the key header when a caller sends one. ``cookie`` also reads the cookie and, when
    neither is sent, makes a key that the first answer sets, pinning the client.
    """
    sticky = routes.sticky
    key = new_key = None
    if sticky.mode != "none" and sticky.header:
        key = headers.get(sticky.header) or None
    if key is None and sticky.mode == "cookie" and sticky.cookie:
        key = cookies.get(sticky.cookie) or None
        if key is None:
            key = new_key = uuid.uuid4().hex
    override = headers.get(routes.override_header) if routes.override_header else None
    return choose_variant(routes, key, override, rng), new_key


@dataclass
class RouteSource:
    """Where routes come from: a file path or an http(s) URL. ``fetch`` returns the
    routes only when the content changed since the last call."""

    location: str
    _fingerprint: str | None = None

    @property
    def is_url(self) -> bool:
        return self.location.startswith(("http://", "https://"))

    def _read(self) -> bytes:
        if self.is_url:
            with httpx.stream("GET", self.location, timeout=10) as response:
                response.raise_for_status()
                content = b""
                for chunk in response.iter_bytes():
                    content += chunk
                    if len(content) > MAX_ROUTES_BYTES:
                        raise ValueError(
                            f"routes at {self.location} exceed {MAX_ROUTES_BYTES} bytes"
                        )
                return content
        with Path(self.location).open("rb") as handle:
            content = handle.read(MAX_ROUTES_BYTES + 1)
        if len(content) > MAX_ROUTES_BYTES:
            raise ValueError(f"routes file {self.location} exceeds {MAX_ROUTES_BYTES} bytes")
        return content

    def fetch(self) -> Routes | None:
        """Blocking (call it in a thread); ValueError/OSError/httpx errors propagate."""
        content = self._read()
        fingerprint = hashlib.sha256(content).hexdigest()
        if fingerprint == self._fingerprint:
            return None
        routes = parse_routes(content)
        self._fingerprint = fingerprint  # only after it parsed: a bad file is retried
        return routes


__all__ = [
    "VARIANTS",
    "Backend",
    "RouteSource",
    "Routes",
    "Sticky",
    "Variant",
    "bucket",
    "choose",
    "choose_variant",
    "parse_routes",
]
