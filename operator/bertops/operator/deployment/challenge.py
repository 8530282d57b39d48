"""The offline evaluation of a new model against stable (champion/challenger), as a step:
when the rollout asked for one (``status.challenge`` Running, set by
:func:`bertops.operator.rollout.state.decide`), start ``bertops trainer challenge`` on
the frozen sets, and once it ended, fill in the phase, message and scores from
:func:`bertops.operator.rollout.challenge.verdict`.

Called by :class:`bertops.operator.deployment.reconciler.DeploymentReconciler` after
``decide``, on the decided status (in place). The frozen sets: the test split of the
dataset the stable model was trained on, and the holdout (newest feedback, never in any
split) of the dataset the candidate was trained on, when it has one. The step's name is
kept in ``status.challenge.step`` and derived from the two models, so a restarted
operator adopts the running step instead of starting another.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from bertops.api import deployment as api
from bertops.api.meta import Resources
from bertops.api.results import ChallengeDetails
from bertops.api.steps import ChallengeStep
from bertops.operator.config import OperatorConfig
from bertops.operator.deployment.monitor_chain import dataset_of, trained_on
from bertops.operator.kube import Kube
from bertops.operator.objects import ObjectRef
from bertops.operator.planners.common import short, step_name
from bertops.operator.rollout.challenge import verdict
from bertops.operator.runtime.base import Runtime, StepPhase, StepRequest

log = logging.getLogger(__name__)


def challenge_serial(model: str, stable: str) -> int:
    """A number naming this pair's step (step names carry a number, not free text)."""
    return int(hashlib.sha256(f"{stable}\x00{model}".encode()).hexdigest()[:6], 16)


class OfflineChallenge:
    def __init__(self, kube: Kube, runtime: Runtime, config: OperatorConfig) -> None:
        self.kube = kube
        self.runtime = runtime
        self.config = config

    def collect(
        self, ref: ObjectRef, spec: api.BertDeploymentSpec, status: api.BertDeploymentStatus
    ) -> None:
        """Read a finished evaluation step into ``status.challenge`` (phase, message,
        scores) and remove the step; a vanished one is started again."""
        challenge = status.challenge
        if challenge is None or challenge.phase != "Running" or challenge.step is None:
            return
        observed = self.runtime.observe(ref.namespace, challenge.step, ref.uid)
        if observed.phase == StepPhase.RUNNING:
            return
        details = observed.result.details if observed.result is not None else None
        if observed.phase == StepPhase.SUCCEEDED and isinstance(details, ChallengeDetails):
            found = verdict(details.sets or [], spec.rollout.analysis)
            status.challenge = challenge.model_copy(
                update={
                    "phase": found.phase,
                    "message": short(found.message, 600),
                    "scores": found.scores,
                }
            )
        elif observed.phase == StepPhase.ABSENT:
            status.challenge = challenge.model_copy(update={"step": None})  # start again
            return
        else:
            why = (observed.result.message if observed.result else "") or observed.message
            self._fail(status, challenge, f"evaluation step {challenge.step} failed: {why}")
        self.runtime.remove(ref.namespace, challenge.step)

    def start(
        self,
        ref: ObjectRef,
        spec: api.BertDeploymentSpec,
        status: api.BertDeploymentStatus,
        models: dict[str, dict[str, Any]],
    ) -> StepRequest | None:
        """The evaluation step the rollout asked for and nobody started yet, if any."""
        challenge = status.challenge
        if challenge is None or challenge.phase != "Running" or challenge.step is not None:
            return None
        return self._start(ref, spec.serving.resources, status, challenge, models)

    def _start(
        self,
        ref: ObjectRef,
        resources: Resources,
        status: api.BertDeploymentStatus,
        challenge: api.ChallengeStatus,
        models: dict[str, dict[str, Any]],
    ) -> StepRequest | None:
        stable, candidate = models.get(challenge.stable), models.get(challenge.model)
        stable_uri = _artifact(stable)
        candidate_uri = _artifact(candidate)
        if stable is None or candidate is None or not stable_uri or not candidate_uri:
            self._fail(status, challenge, "a model of the pair has no verified artifact")
            return None
        test_uri, problem = dataset_of(
            self.kube, ref.namespace, stable, "the offline evaluation needs its test split"
        )
        if test_uri is None:
            self._fail(status, challenge, f"no test split for {challenge.stable}: {problem}")
            return None
        serial = challenge_serial(challenge.model, challenge.stable)
        name = step_name(ref.name, "challenge", serial, ref.uid)
        step = ChallengeStep(
            name=name,
            stable_model_uri=stable_uri,
            candidate_model_uri=candidate_uri,
            test_uri=test_uri,
            holdout_uri=self._holdout(ref.namespace, candidate),
            output_uri=self.config.artifact_uri(
                ref.namespace, "deployments", ref.name, "challenges", f"c{serial}"
            ),
        )
        status.challenge = challenge.model_copy(update={"step": name})
        return StepRequest(
            name=name,
            namespace=ref.namespace,
            spec=step,
            # Both models score the test split as a server replica would: its resources.
            cpu=resources.cpu,
            memory=resources.memory,
            owner=ref.owner_reference(),
        )

    def _holdout(self, namespace: str, candidate: dict[str, Any]) -> str | None:
        """The held-back feedback of the dataset the candidate was trained on."""
        _, body = trained_on(self.kube, namespace, candidate)
        status = (body or {}).get("status") or {}
        return str(status["holdoutUri"]) if status.get("holdoutUri") else None

    @staticmethod
    def _fail(
        status: api.BertDeploymentStatus, challenge: api.ChallengeStatus, message: str
    ) -> None:
        log.warning("offline evaluation of %s: %s", challenge.model, message)
        status.challenge = challenge.model_copy(
            update={"phase": "Failed", "message": short(message, 600)}
        )


def _artifact(model: dict[str, Any] | None) -> str | None:
    uri = ((model or {}).get("status") or {}).get("artifactUri")
    return str(uri) if uri else None
