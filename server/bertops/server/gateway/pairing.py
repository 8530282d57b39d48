"""Paired answers: a candidate model's labels against stable's on the same texts, so the
rollout can see where the two disagree and feedback can score both on equal terms.

Two candidates: the canary with ``routes.compare`` (after the canary answered a caller,
:meth:`Pairing.ask_stable` asks stable the same request in the background) and the
shadow (:class:`~bertops.server.gateway.shadow.Shadow` hands its labels for an answer
stable gave to :meth:`Pairing.shadow_labels`). Each pair is counted per text in
``bertops_gateway_paired_answers_total`` and attached to the request's remembered answer
(:meth:`~bertops.server.gateway.feedback.ServedStore.attach`) for
:class:`~bertops.server.gateway.feedback.FeedbackDesk` to score.

A pair call runs on the shadow's pool and under its in-flight cap (a saturated stable
never delays callers; a call over the cap is dropped and counted) and is counted only
in ``bertops_gateway_pair_requests_total``: it is not user traffic for stable.

Owned by :class:`bertops.server.gateway.app.Gateway`.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from bertops.api.routes import Backend
from bertops.server.gateway.bodies import BodyTooLargeError
from bertops.server.gateway.inference import predicted
from bertops.server.gateway.metrics import GatewayMetrics
from bertops.server.gateway.pairs import Pair, score_pair
from bertops.server.gateway.served import ServedStore
from bertops.server.gateway.shadow import Background, Call

# The variant header a pair call carries to stable, so stable's prediction log can tell
# these rows from its user traffic.
PAIR_VARIANT = "pair"


class Pairing:
    def __init__(
        self, metrics: GatewayMetrics, served: ServedStore, background: Background
    ) -> None:
        self.metrics = metrics
        self.served = served
        self.background = background

    def record(self, request_id: str, pair: Pair) -> bool:
        """Count the pair per text and remember it for feedback; False (nothing counted)
        when the two answers do not have one label per text each."""
        if not pair.candidate or len(pair.candidate) != len(pair.stable):
            return False
        for stable_label, label in zip(pair.stable, pair.candidate, strict=True):
            self.metrics.paired_answers.labels(
                pair.variant, pair.model, pair.stable_model, stable_label, label
            ).inc()
        for index, truth in (self.served.attach(request_id, pair) or {}).items():
            score_pair(self.metrics, pair, index, truth)  # feedback that came first
        return True

    def shadow_labels(
        self,
        request_id: str,
        stable: Backend,
        stable_labels: tuple[str, ...],
        shadow: Backend,
    ) -> Callable[[tuple[str, ...]], None]:
        """What the shadow call does with its labels for an answer stable gave."""

        def pair(labels: tuple[str, ...]) -> None:
            self.record(request_id, Pair("shadow", shadow.name, stable.name, labels, stable_labels))

        return pair

    def ask_stable(
        self, request_id: str, stable: Backend, canary: Backend, labels: tuple[str, ...], call: Call
    ) -> None:
        """After the canary answered ``call`` with ``labels``: ask stable the same in the
        background and return at once."""
        if not self.background.start(lambda: self._ask(request_id, stable, canary, labels, call)):
            self.metrics.pair_requests.labels(stable.name, "dropped").inc()

    async def _ask(
        self, request_id: str, stable: Backend, canary: Backend, labels: tuple[str, ...], call: Call
    ) -> None:
        try:
            answer = await self.background.send(stable, call, PAIR_VARIANT)
        except (httpx.HTTPError, BodyTooLargeError):
            self.metrics.pair_requests.labels(stable.name, "error").inc()
            return
        stable_labels = (
            tuple(label for label, _ in predicted(answer.content, answer.binary_header))
            if answer.status == 200
            else ()
        )
        paired = self.record(
            request_id, Pair("canary", canary.name, stable.name, labels, stable_labels)
        )
        self.metrics.pair_requests.labels(stable.name, "ok" if paired else "error").inc()
