"""The gateway's routes: which backends serve a deployment (stable, optional canary with a
weight, optional shadow), how a request is made sticky, and the pure routing decision.
Also the sources routes come from (a file or an http(s) URL, polled for changes).

The operator writes these documents (a ConfigMap mounted as a file, in camelCase like
the CRDs); :mod:`bertops.server.gateway.app` reads them and calls :func:`choose_variant`
per request. pydantic + stdlib + pyyaml only, so the operator could import it too.

A routes file::

    stable: {name: sentiment-v1, url: "http://sentiment-v1:8080"}
    canary: {name: sentiment-v2, url: "http://sentiment-v2:8080"}
    canaryWeight: 10            # percent of traffic to the canary, 0-100
    shadow: {name: sentiment-v3, url: "http://sentiment-v3:8080"}   # optional mirror
    sticky: {header: x-bertops-key, cookie: bertops-key}
    overrideHeader: x-bertops-variant   # "stable" / "canary" forces a variant
    timeoutSeconds: 30
    revision: "7"               # free text, shown in metrics and /admin/routes
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
import yaml
from pydantic import Field, model_validator

from bertops.api.meta import ApiModel

Variant = Literal["stable", "canary"]
VARIANTS: tuple[Variant, ...] = ("stable", "canary")


class Backend(ApiModel):
    name: str = Field(min_length=1, description="The model version served there.")
    url: str = Field(pattern=r"^https?://", description="Base URL of the model server.")
    model: str | None = Field(
        default=None,
        description="OIP model name at the backend; /v2/models/<any>/ paths are rewritten "
        "to it (default: no rewrite).")


class Sticky(ApiModel):
    header: str | None = Field(default="x-bertops-key",
                               description="Request header holding the user's key.")
    cookie: str | None = Field(default="bertops-key",
                               description="Cookie holding the key; set when absent.")


class Routes(ApiModel):
    stable: Backend
    canary: Backend | None = None
    canary_weight: float = Field(default=0, ge=0, le=100)
    shadow: Backend | None = None
    sticky: Sticky = Field(default_factory=Sticky)
    override_header: str | None = "x-bertops-variant"
    timeout_seconds: float = Field(default=30, gt=0, le=3600)
    revision: str | None = None

    @model_validator(mode="after")
    def _canary_weight_needs_canary(self) -> Routes:
        if self.canary_weight > 0 and self.canary is None:
            raise ValueError("canaryWeight > 0 needs a canary backend")
        return self

    def backend(self, variant: Variant) -> Backend:
        if variant == "canary" and self.canary is not None:
            return self.canary
        return self.stable


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


def choose_variant(routes: Routes, key: str | None, override: str | None = None,
                   rng: random.Random | None = None) -> Variant:
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
            response = httpx.get(self.location, timeout=10)
            response.raise_for_status()
            return response.content
        return Path(self.location).read_bytes()

    def fetch(self) -> Routes | None:
        """Blocking (call it in a thread); ValueError/OSError/httpx errors propagate."""
        content = self._read()
        fingerprint = hashlib.sha256(content).hexdigest()
        if fingerprint == self._fingerprint:
            return None
        routes = parse_routes(content)
        self._fingerprint = fingerprint  # only after it parsed: a bad file is retried
        return routes
