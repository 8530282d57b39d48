"""The gateway's routes document: which model servers serve a deployment (stable, an
optional canary with a weight, an optional shadow), how requests are made sticky,
whether a header may force a variant, and whether the canary's answers are paired with
stable's.

A contract between two components, like the step specs: the operator writes it (a
ConfigMap mounted into the gateway, see
:mod:`bertops.operator.deployment.gateway_manifests`, or ``PUT /admin/routes`` on the
gateway's loopback admin port) and the gateway (:mod:`bertops.server.gateway`) reads it.
camelCase on the wire like the CRDs::

    stable: {name: sentiment-v1, url: "http://sentiment-v1:8080", labels: [neg, pos]}
    canary: {name: sentiment-v2, url: "http://sentiment-v2:8080"}
    canaryWeight: 10            # percent of traffic to the canary, 0-100
    shadow: {name: sentiment-v3, url: "http://sentiment-v3:8080"}   # optional mirror
    sticky: {mode: header, header: x-bertops-key}   # mode: none (default), header, cookie
    compare: true               # ask stable too for what the canary answered (background)
    overrideHeader: x-bertops-variant   # optional: "stable"/"canary" forces a variant
    timeoutSeconds: 30
    revision: "7"               # free text, shown in metrics and /admin/routes
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from bertops.api.meta import ApiModel


class Backend(ApiModel):
    name: str = Field(min_length=1, description="The model version served there.")
    url: str = Field(pattern=r"^https?://", description="Base URL of the model server.")
    model: str | None = Field(
        default=None,
        description="OIP model name at the backend; /v2/models/<any>/ paths are rewritten "
        "to it (default: no rewrite).",
    )
    labels: list[str] | None = Field(
        default=None,
        max_length=4096,
        description="The model's labels (BertModel status.labels): feedback must name one. "
        "Unset: the gateway learns them from the server's answers or model metadata.",
    )


class Sticky(ApiModel):
    mode: Literal["none", "header", "cookie"] = Field(
        default="none",
        description="none: each request drawn at random by weight; header: bucketed by the "
        "key header when sent, else random; cookie: by the header, else the cookie, which "
        "is set when absent (a client that keeps cookies stays on one variant).",
    )
    header: str | None = Field(
        default="x-bertops-key", description="Request header holding the user's key."
    )
    cookie: str | None = Field(
        default="bertops-key", description="Cookie holding the key (cookie mode); set when absent."
    )


class Routes(ApiModel):
    stable: Backend
    canary: Backend | None = None
    canary_weight: float = Field(default=0, ge=0, le=100)
    shadow: Backend | None = None
    sticky: Sticky = Field(default_factory=Sticky)
    override_header: str | None = Field(
        default=None,
        description="A request header whose value (stable or canary) forces the variant. "
        "Off unless set: anyone who can send it could steer traffic onto a canary.",
    )
    compare: bool = Field(
        default=False,
        description="For each inference the canary answers, the gateway also asks stable in "
        "the background, so feedback scores both models on the same texts.",
    )
    timeout_seconds: float = Field(default=30, gt=0, le=3600)
    revision: str | None = None

    @model_validator(mode="after")
    def _canary_weight_needs_canary(self) -> Routes:
        if self.canary_weight > 0 and self.canary is None:
            raise ValueError("canaryWeight > 0 needs a canary backend")
        return self

    def backend(self, variant: str) -> Backend:
        if variant == "canary" and self.canary is not None:
            return self.canary
        return self.stable
