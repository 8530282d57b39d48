"""The reconciler's refusals, with the API layer and the runtime faked: a stored object
that breaks the API rules gets InvalidSpec instead of a crash, a child name taken by a
stranger is never adopted, and an artifact outside the allowlist is never read."""

from __future__ import annotations

import copy
from typing import Any

from bertops.operator.kube import NameConflictError
from bertops.operator.reconcile import Reconciler
from bertops.operator.runtime.base import StepObservation, StepPhase
from tests.integration import manifests as m
from tests.operator import builders as b


class FakeKube:
    """Objects by (kind, name); records status writes, creates and Events. It and
    AbsentRuntime are fakes, not a Kube and a Runtime: ``type: ignore[arg-type]`` where the
    Reconciler is given them."""

    def __init__(self, *bodies: dict[str, Any]) -> None:
        self.objects = {(body["kind"], body["metadata"]["name"]): body for body in bodies}
        self.statuses: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []
        self.conflict = False

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get((kind, name)))

    def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.statuses.append(status)

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        if self.conflict:
            raise NameConflictError(manifest, "it is not owned by this object")
        return manifest

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


class AbsentRuntime:
    def __init__(self, phase: StepPhase = StepPhase.ABSENT, **fields: Any) -> None:
        self.observation = StepObservation(phase, **fields)
        self.started: list[Any] = []

    def observe(self, namespace: str, name: str, owner_uid: str = "") -> StepObservation:
        return self.observation

    def start(self, request: Any) -> None:
        self.started.append(request)

    def stop(self, namespace: str, name: str) -> bool:
        return False

    def remove(self, namespace: str, name: str) -> bool:
        return False


def stored(body: dict[str, Any], uid: str = "uid-1") -> dict[str, Any]:
    body = copy.deepcopy(body)
    body["metadata"].update(namespace="ns", uid=uid, generation=1)
    return body


def reconciler(kube: FakeKube, runtime: AbsentRuntime | None = None) -> Reconciler:
    return Reconciler(kube, runtime or AbsentRuntime(), b.CONFIG, clock=lambda: b.NOW)  # type: ignore[arg-type]


def test_a_stored_object_breaking_the_rules_gets_invalid_spec() -> None:
    """E.g. a recipe accepted by an older CRD: quantize is no longer allowed before prune."""
    steps = [{"method": "quantize"}, {"method": "magnitudePrune", "sparsity": 0.5}]
    body = stored(m.with_path(m.model("v2"), "spec.compression.steps", steps))
    body["status"] = {"artifactUri": "/store/x"}
    kube = FakeKube(body)
    runtime = AbsentRuntime()
    plan = reconciler(kube, runtime).reconcile("BertModel", "ns", "v2")
    assert plan is not None and not runtime.started
    (status,) = kube.statuses
    (ready,) = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "InvalidSpec")
    assert "nothing can follow quantize" in ready["message"]
    assert status["artifactUri"] == "/store/x"  # the rest of the status is kept
    assert [(t, r) for t, r, _ in kube.events] == [("Warning", "InvalidSpec")]


def test_a_name_conflict_on_create_is_reported_and_not_adopted() -> None:
    training = stored(m.training("run"))
    dataset = stored(m.dataset("tweets"))
    dataset["status"] = b.ready_dataset().status.to_wire()
    trained = b.succeeded("train", artifacts={"model": "/store/m"}, details={"modelName": "run"})
    kube = FakeKube(training, dataset)
    kube.conflict = True  # the user's BertModel "run" appears between our GET and create
    runtime = AbsentRuntime(StepPhase.SUCCEEDED, result=trained.result)
    reconciler(kube, runtime).reconcile("BertTraining", "ns", "run")
    assert kube.statuses == []  # "Completed, registered BertModel run" is never written
    assert [(t, r) for t, r, _ in kube.events] == [("Warning", "NameConflict")]


def test_a_foreign_model_of_that_name_is_seen_as_a_conflict() -> None:
    training = stored(m.training("run"), uid="uid-run")
    users_model = stored(m.model("run"), uid="uid-users")
    kube = FakeKube(training, users_model)
    reconciler(kube).reconcile("BertTraining", "ns", "run")
    (status,) = kube.statuses
    reasons = {c["type"]: c["reason"] for c in status["conditions"]}
    assert reasons["Succeeded"] == "NameConflict"


def test_an_artifact_outside_the_allowlist_is_never_read(monkeypatch: Any) -> None:
    from bertops.operator import reconcile

    def no_reading(uri: str) -> None:
        raise AssertionError(f"read {uri}")

    monkeypatch.setattr(reconcile, "read_model_artifact", no_reading)
    info = reconciler(FakeKube())._read_artifact("/root/.kube", "ns")
    assert (
        info is not None
        and "outside this namespace's part of the artifact store" in info.problems[0]
    )


def test_engine_argo_picks_the_argo_runtime_and_reports_it_missing_slowly() -> None:
    """The Argo runtime runs an ``engine: argo`` training; the native one stays idle. When
    Argo is unavailable the condition says so once, and the next polls do not ask again."""
    from bertops.operator.runtime.base import RuntimeUnavailableError

    training = stored(m.with_path(m.training("run"), "spec.engine", "argo"))
    dataset = stored(m.dataset("tweets"))
    dataset["status"] = b.ready_dataset().status.to_wire()
    native, argo = AbsentRuntime(), AbsentRuntime()
    kube = FakeKube(training, dataset)
    run = Reconciler(kube, native, b.CONFIG, clock=lambda: b.NOW, argo_runtime=argo)  # type: ignore[arg-type]
    run.reconcile("BertTraining", "ns", "run")
    assert [r.kind for r in argo.started] == ["train"] and not native.started

    class Missing(AbsentRuntime):
        def observe(self, namespace: str, name: str, owner_uid: str = "") -> StepObservation:
            self.started.append(name)  # counts the checks
            raise RuntimeUnavailableError("no Argo here: install Argo Workflows")

    missing, kube = Missing(), FakeKube(training, dataset)
    run = Reconciler(kube, native, b.CONFIG, clock=lambda: b.NOW, argo_runtime=missing)  # type: ignore[arg-type]
    for _ in range(3):
        run.reconcile("BertTraining", "ns", "run")
    assert len(missing.started) == 1 and not native.started
    (status,) = kube.statuses
    (done,) = [c for c in status["conditions"] if c["type"] == "Succeeded"]
    assert (done["status"], done["reason"]) == ("False", "RuntimeUnavailable")
    assert [(t, r) for t, r, _ in kube.events] == [("Warning", "RuntimeUnavailable")]
