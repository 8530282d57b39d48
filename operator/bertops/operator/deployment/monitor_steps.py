"""What a monitoring pass asks of the reconciler (:class:`MonitorPlan`), what the monitor
steps are given (:func:`min_rows`, :func:`reference_uri`), and which finished monitor
steps of a BertDeployment are removed, and removing them.

Every monitor step (``bertops trainer reference|drift``, see :mod:`.monitor`) stays on the
runtime once it finished: a folder in the state dir, or a Job with its pods and
ConfigMap. At the default interval that is 288 a day, so only the latest finished one is
kept (for ``kubectl logs`` and debugging); the one before it is removed.

The moment: when the step that ``status.drift.step`` names (serial S, read from the
stored status) is seen finished (or gone), the step of serial S-1 goes. Step S was
started only after S-1 had been collected, and the status that names S is the one that
recorded S-1's result, so S-1's result is certainly in status; S-1 has finished, since at
most one monitor step runs per deployment (the runtime refuses to remove a running step
anyway). Reference and drift steps share the serial, so S-1 is either kind: both names
are tried (the absent one costs a read). Training and prepare steps are never named here.
A removal that fails is a warning and is tried no more: it never fails the reconcile.
"""

from __future__ import annotations

import logging
from typing import Any

from bertops.api import deployment as api
from bertops.operator.config import OperatorConfig
from bertops.operator.objects import Event, ObjectRef
from bertops.operator.planners.common import step_name
from bertops.operator.runtime.base import Runtime, StepPhase, StepRequest

log = logging.getLogger(__name__)
MONITOR_STEPS = ("drift", "ref")  # the step names' kinds (monitor.py names them so)
MIN_ROWS = 50


def min_rows(spec: api.BertDeploymentSpec) -> int:
    """Rows a check needs before it scores: a two-sample test on fewer says nothing."""
    return min(MIN_ROWS, spec.drift.window_size)


def reference_uri(config: OperatorConfig, namespace: str, model: dict[str, Any]) -> str:
    """Beside the model in the store, keyed by its manifest digest: a model re-registered
    with other weights under the same name gets a new reference."""
    status = model.get("status") or {}
    digest = str(status.get("manifestSha256") or "unknown")[:12]
    return config.artifact_uri(namespace, "references", model["metadata"]["name"], digest)


class MonitorPlan:
    """What one monitoring pass asks the reconciler to do."""

    def __init__(self) -> None:
        self.start: StepRequest | None = None
        self.create: list[dict[str, Any]] = []
        self.events: list[Event] = []


def superseded(name: str, uid: str, serial: int | None, phase: StepPhase) -> list[str]:
    """The steps to remove once the monitor step of ``serial`` (the one status names) was
    observed in ``phase``: both possible names of serial - 1; none while it runs, and none
    before the second step."""
    if phase == StepPhase.RUNNING or serial is None or serial < 2:
        return []
    return [step_name(name, kind, serial - 1, uid) for kind in MONITOR_STEPS]


def remove_superseded(
    runtime: Runtime, ref: ObjectRef, serial: int | None, phase: StepPhase
) -> list[str]:
    """Remove what :func:`superseded` names; the names removed. Never raises."""
    removed = []
    for step in superseded(ref.name, ref.uid, serial, phase):
        try:
            if runtime.remove(ref.namespace, step):
                removed.append(step)
                log.debug("%s/%s: removed finished monitor step %s", ref.namespace, ref.name, step)
        except Exception as error:  # a leftover step is harmless; a failed reconcile is not
            log.warning(
                "%s/%s: could not remove finished monitor step %s: %s",
                ref.namespace,
                ref.name,
                step,
                error,
            )
    return removed
