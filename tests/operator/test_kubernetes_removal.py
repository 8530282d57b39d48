"""KubernetesRuntime.remove on the real API server (the test acts as kubelet and Job
controller, see test_kubernetes_runtime.act_as_kubelet): a finished step's Job and
ConfigMap are deleted, a running one's are not, an absent step is False, a ConfigMap left
by a Job its TTL removed goes too, and a uid precondition spares an object re-created
under the same name. (There is no garbage collector here, so the pods stay; a Job
deleted with the API server's default policy for Jobs, orphan, would stay too, held by
the orphan finalizer: that it goes at once shows the delete asked for background.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from bertops.api.steps import DriftStep, StepResult
from bertops.operator.config import OperatorConfig
from bertops.operator.kube import Kube
from bertops.operator.planners.common import step_name
from bertops.operator.runtime.base import StepPhase, StepRequest
from bertops.operator.runtime.kubernetes import KubernetesRuntime
from tests.operator.test_kubernetes_runtime import IMAGE, act_as_kubelet

pytestmark = pytest.mark.integration
UID = "cccccccc-0000-4000-8000-000000000003"
OWNER = {
    "apiVersion": "bertops.io/v1alpha1",
    "kind": "BertDeployment",
    "name": "web",
    "uid": UID,
    "controller": True,
    "blockOwnerDeletion": True,
}


def drift_request(namespace: str, serial: int) -> StepRequest:
    name = step_name("web", "drift", serial, UID)
    spec = DriftStep(
        name=name,
        reference_uri="/artifacts/ns/references/v1/abc",
        predictions_uri="/artifacts/ns/deployments/web/predictions",
        output_uri=f"/artifacts/ns/deployments/web/drift/check-{serial}",
    )
    return StepRequest(name=name, namespace=namespace, spec=spec, owner=OWNER)


def present(kube: Kube, namespace: str, name: str) -> tuple[bool, bool]:
    """Whether the step's Job and its ConfigMap exist."""
    job = kube.read("batch/v1", "Job", namespace, name)
    configmap = kube.read("v1", "ConfigMap", namespace, name)
    return job is not None, configmap is not None


def test_remove_deletes_finished_steps_only(
    kube_layer: Kube, namespace: str, tmp_path: Path
) -> None:
    config = OperatorConfig(runtime="kubernetes", image=IMAGE, artifact_root=str(tmp_path))
    runtime = KubernetesRuntime(config, kube_layer)
    done, failed, running, expired = (drift_request(namespace, n) for n in (2, 3, 4, 5))
    for request in (done, failed, running, expired):
        runtime.start(request)
        assert present(kube_layer, namespace, request.name) == (True, True)
    result = StepResult(kind="drift", name=done.name, succeeded=True)
    act_as_kubelet(kube_layer, namespace, done.name, result, succeeded=True)
    act_as_kubelet(kube_layer, namespace, failed.name, None, succeeded=False, exit_code=1)
    assert runtime.observe(namespace, done.name, UID).phase == StepPhase.SUCCEEDED
    assert runtime.observe(namespace, running.name, UID).phase == StepPhase.RUNNING

    assert runtime.remove(namespace, done.name) is True
    assert present(kube_layer, namespace, done.name) == (False, False)
    assert runtime.observe(namespace, done.name, UID).phase == StepPhase.ABSENT
    assert runtime.remove(namespace, failed.name) is True
    assert present(kube_layer, namespace, failed.name) == (False, False)

    assert runtime.remove(namespace, running.name) is False  # refused: it still runs
    assert present(kube_layer, namespace, running.name) == (True, True)
    assert runtime.observe(namespace, running.name, UID).phase == StepPhase.RUNNING
    assert runtime.remove(namespace, done.name) is False  # already removed
    assert runtime.remove(namespace, step_name("web", "drift", 9, UID)) is False  # never was

    # The Job went by its ttlSecondsAfterFinished; its ConfigMap (owned by the deployment)
    # stayed: removing the step takes it.
    kube_layer.delete("batch/v1", "Job", namespace, expired.name)
    assert present(kube_layer, namespace, expired.name) == (False, True)
    assert runtime.remove(namespace, expired.name) is True
    assert present(kube_layer, namespace, expired.name) == (False, False)


def test_delete_with_a_uid_spares_another_object_of_that_name(
    kube_layer: Kube, namespace: str, tmp_path: Path
) -> None:
    config = OperatorConfig(runtime="kubernetes", image=IMAGE, artifact_root=str(tmp_path))
    request = drift_request(namespace, 2)
    KubernetesRuntime(config, kube_layer).start(request)
    job = kube_layer.read("batch/v1", "Job", namespace, request.name)
    assert job is not None
    stranger = "dddddddd-0000-4000-8000-000000000004"
    assert kube_layer.delete("batch/v1", "Job", namespace, request.name, stranger) is False
    assert present(kube_layer, namespace, request.name) == (True, True)
    uid = job["metadata"]["uid"]
    assert kube_layer.delete("batch/v1", "Job", namespace, request.name, uid) is True
    assert kube_layer.delete("batch/v1", "Job", namespace, request.name, uid) is False
