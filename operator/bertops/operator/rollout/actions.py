"""Manual rollout actions (promote, abort, pause, resume, retry) as an annotation on the
BertDeployment, applied exactly once.

A person (or a script) writes::

    kubectl annotate bdep/sentiment --overwrite \\
        bertops.io/rollout-action=promote/$(date +%s)

The value is ``<action>/<nonce>``. The reconciler reads the annotation, parses it with
:func:`parse_action` and passes it to :func:`bertops.operator.rollout.state.decide`,
which applies it (:func:`apply_action`) only when the whole value is not among
``status.handledActions`` (the last ten applied) and then records it there. The status
write that carries the action's effect also records the value, so an action is applied
once even when the operator restarts or reconciles the same object many times, or an
older value is written back; doing the same thing again needs a new nonce.

Why an annotation, not a spec field or a status subresource patch by the user:

- the spec is the user's and Git's. A ``spec.rollout.promote: true`` would have to be
  committed to Git (or Argo CD would see the object OutOfSync and self-heal would undo
  it), and the operator could never reset it without writing the user's spec;
- status is the operator's: a person patching it races the operator's own writes and
  needs a status-subresource permission that people should not hold;
- an annotation the Git manifest does not set is outside what Argo CD compares, kubectl
  can write it, it is visible in ``kubectl describe``, and it does not bump
  ``metadata.generation`` (the spec did not change);
- the nonce makes the value unique per request, so the annotation can stay in place
  (the operator never edits it) and re-reading it is harmless.

``spec.rollout.paused`` stays the declarative pause for a pause that belongs in Git.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Protocol

from bertops.api import deployment as api
from bertops.api.deployment import BertDeploymentStatus

ANNOTATION = "bertops.io/rollout-action"
ACTION_MEMORY = 10  # handled values remembered (status.handledActions)
Action = Literal["promote", "abort", "pause", "resume", "retry"]
ACTIONS: tuple[Action, ...] = ("promote", "abort", "pause", "resume", "retry")
_VALUE = re.compile(r"^(?P<action>[a-z]+)/(?P<nonce>[A-Za-z0-9][A-Za-z0-9._-]{0,62})$")


@dataclass(frozen=True)
class ManualAction:
    """A parsed annotation value; ``action`` is None when the value is invalid (it is
    still recorded as handled, so the warning is given once)."""

    raw: str
    action: Action | None
    error: str | None = None


def parse_action(value: str | None) -> ManualAction | None:
    """The action in an annotation value; None when there is no annotation."""
    if value is None or not value.strip():
        return None
    raw = value.strip()
    match = _VALUE.match(raw)
    if match is None:
        return ManualAction(
            raw,
            None,
            f"{ANNOTATION} must look like <action>/<nonce> (e.g. promote/1), got {raw[:80]!r}",
        )
    action = match["action"]
    for known in ACTIONS:
        if action == known:
            return ManualAction(raw, known)
    return ManualAction(
        raw, None, f"unknown rollout action {action!r}; use one of {', '.join(ACTIONS)}"
    )


def from_metadata(metadata: dict[str, object]) -> ManualAction | None:
    """The action in an object's metadata (kopf body or parsed BertDeployment)."""
    annotations = metadata.get("annotations")
    if not isinstance(annotations, dict):
        return None
    value = annotations.get(ANNOTATION)
    return parse_action(value if isinstance(value, str) else None)


class ActionTarget(Protocol):
    """What applying an action needs of one ``decide`` call (its ``_Run``)."""

    st: BertDeploymentStatus

    def event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None: ...

    def promote(self, why: str) -> None: ...

    def end_canary(
        self, outcome: Literal["Aborted"], reason: str, message: str, *, reject: bool
    ) -> None: ...


def apply_action(run: ActionTarget, action: ManualAction | None) -> None:
    """Apply a parsed action to the run's status once (the value joins
    ``status.handledActions``); an action with nothing to act on is a Warning event."""
    handled = run.st.handled_actions or []
    if action is None or action.raw in handled:
        return
    # A short memory, not just the last value: an older value written back (say, by a
    # Git sync restoring an annotation) is not applied a second time.
    run.st.handled_actions = [*handled, action.raw][-ACTION_MEMORY:]
    canary = run.st.canary_model
    if action.action is None:
        run.event("Warning", api.REASON_INVALID_ACTION, action.error or "invalid")
    elif action.action == "promote" and canary:
        run.promote(f"promoted by hand ({ANNOTATION}={action.raw})")
    elif action.action == "abort" and canary:
        run.end_canary(
            "Aborted",
            api.REASON_ABORTED,
            f"{canary} aborted by hand ({ANNOTATION}={action.raw}); serving {run.st.stable_model}",
            reject=True,
        )
    elif action.action == "pause" and not run.st.paused_by_action:
        run.st.paused_by_action = True
        run.event("Normal", api.REASON_PAUSED, f"rollout paused by hand ({action.raw})")
    elif action.action == "resume" and run.st.paused_by_action:
        run.st.paused_by_action = None
        run.event("Normal", api.REASON_RESUMED, f"rollout resumed by hand ({action.raw})")
    elif action.action == "retry" and run.st.rejected_model:
        run.event(
            "Normal",
            api.REASON_RETRY,
            f"{run.st.rejected_model} may be rolled out again ({action.raw})",
        )
        challenge = run.st.challenge
        if challenge is not None and challenge.model == run.st.rejected_model:
            # A person overrides the offline evaluation's refusal too.
            run.st.challenge = challenge.model_copy(
                update={"phase": "Passed", "message": f"allowed by hand ({action.raw})"}
            )
        run.st.rejected_model = None
    else:
        run.event(
            "Warning",
            api.REASON_ACTION_IGNORED,
            f"{action.action} has nothing to act on now ({action.raw})",
        )
