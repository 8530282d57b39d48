"""Table-driven tests of the pure planners: spec + observed state -> plan."""

from __future__ import annotations

from typing import Any

import pytest

from bertops.api.artifacts import FileDigest, ModelManifest
from bertops.api.meta import find_condition
from bertops.api.steps import CompressStep, PrepareStep, TrainStep
from bertops.operator.objects import ArtifactInfo, Plan
from bertops.operator.planners import dataset as dataset_planner
from bertops.operator.planners import model as model_planner
from bertops.operator.planners import training as training_planner
from bertops.operator.planners.common import step_name
from bertops.operator.runtime.base import StepObservation
from tests.operator import builders as b


def cond(plan: Plan, type_: str) -> tuple[str, str]:
    assert plan.status is not None
    for c in plan.status["conditions"]:
        if c["type"] == type_:
            return c["status"], c["reason"]
    raise AssertionError(f"no {type_} condition")


# -- BertDataset ---------------------------------------------------------------------------

PREPARED = b.succeeded(
    "prepare",
    artifacts={"dataset": "/store/ns/datasets/obj/g1"},
    checksums={"dataset": "c0ffee" * 10 + "abcd"},
    details={
        "rows": {"train": 80, "validation": 10, "test": 10, "total": 100},
        "labels": ["neg", "pos"],
        "numLabels": 2,
        "labelCounts": {"neg": 50, "pos": 50},
        "droppedRows": {"duplicate": 3},
        "tokenLengthP50": 12.0,
    },
)


@pytest.mark.parametrize(
    ("observed", "start", "ready", "event"),
    [
        (b.absent(), True, ("False", "Preparing"), ("Normal", "Preparing")),
        (b.running(message="tokenizing"), False, ("False", "Preparing"), ("Normal", "Preparing")),
        (PREPARED, False, ("True", "Prepared"), ("Normal", "Prepared")),
        (
            b.failed("prepare", 2, "column 'text' not found; columns are: a, b"),
            False,
            ("False", "InvalidData"),
            ("Warning", "InvalidData"),
        ),
        (
            b.failed("prepare", 1, "Traceback ...", ended_at=b.NOW),
            False,
            ("False", "Retrying"),
            ("Warning", "Retrying"),
        ),
    ],
    ids=["absent-starts", "running", "succeeded", "bad-data", "crash"],
)
def test_dataset_plan(
    observed: StepObservation, start: bool, ready: tuple[str, str], event: tuple[str, str]
) -> None:
    plan = dataset_planner.plan(
        b.ref("BertDataset"), b.dataset(), observed, config=b.CONFIG, now=b.NOW
    )
    assert (plan.start is not None) is start
    assert cond(plan, "Ready") == ready
    assert plan.status is not None
    assert plan.status["observedGeneration"] == 1
    assert plan.status["step"] == step_name("obj", "prep", 1, "uid-obj")
    assert [(e.type, e.reason) for e in plan.events] == [event]
    if start:
        assert plan.start is not None
        assert isinstance(plan.start.spec, PrepareStep)
        assert plan.start.spec.output_uri == "/store/ns/datasets/obj/g1"
        assert plan.start.owner["uid"] == "uid-obj"
    if observed is PREPARED:
        assert plan.status["rows"]["total"] == 100
        assert plan.status["shortChecksum"] == "c0ffeec0ffee"
        assert plan.status["labelCounts"] == {"neg": 50, "pos": 50}
        assert plan.status["artifactUri"] == "/store/ns/datasets/obj/g1"


def test_dataset_settled_is_a_no_op() -> None:
    first = dataset_planner.plan(
        b.ref("BertDataset"), b.dataset(), PREPARED, config=b.CONFIG, now=b.NOW
    )
    settled = b.dataset(first.status)
    again = dataset_planner.plan(
        b.ref("BertDataset"), settled, b.absent(), config=b.CONFIG, now=b.NOW
    )
    assert again.empty


def test_dataset_new_generation_restarts_and_stops_old_step() -> None:
    first = dataset_planner.plan(
        b.ref("BertDataset"), b.dataset(), b.running(), config=b.CONFIG, now=b.NOW
    )
    plan = dataset_planner.plan(
        b.ref("BertDataset", generation=2),
        b.dataset(first.status),
        b.absent(),
        config=b.CONFIG,
        now=b.NOW,
    )
    assert plan.stop == [step_name("obj", "prep", 1, "uid-obj")]
    assert plan.start is not None and plan.start.name == step_name("obj", "prep", 2, "uid-obj")


def test_progress_updates_post_no_event() -> None:
    first = dataset_planner.plan(
        b.ref("BertDataset"), b.dataset(), b.absent(), config=b.CONFIG, now=b.NOW
    )
    plan = dataset_planner.plan(
        b.ref("BertDataset"),
        b.dataset(first.status),
        b.running(message="step 2"),
        config=b.CONFIG,
        now=b.NOW,
    )
    assert plan.events == [] and plan.status is not None


# -- BertTraining --------------------------------------------------------------------------

TRAINED = b.succeeded(
    "train",
    artifacts={"model": "/store/ns/models/obj/g1"},
    details={
        "modelName": "run",
        "datasetChecksum": "ab" * 32,
        "epochsRun": 3,
        "testMetrics": {"accuracy": 0.8, "macroF1": 0.75, "loss": 0.5},
    },
)


@pytest.mark.parametrize(
    ("dataset", "observed", "start", "succeeded", "creates_model"),
    [
        (None, b.absent(), False, ("Unknown", "DatasetNotFound"), False),
        (b.dataset(), b.absent(), False, ("Unknown", "WaitingForDataset"), False),
        (b.ready_dataset(), b.absent(), True, ("Unknown", "Training"), False),
        (
            b.ready_dataset(),
            b.running(epoch=2, total_epochs=3, step=10, total_steps=30, loss=0.7, eta_seconds=12),
            False,
            ("Unknown", "Training"),
            False,
        ),
        (b.ready_dataset(), TRAINED, False, ("True", "Completed"), True),
        (
            b.ready_dataset(),
            b.failed("train", 2, "base model folder /x has no weights"),
            False,
            ("False", "InvalidSpec"),
            False,
        ),
    ],
    ids=["dataset-missing", "dataset-not-ready", "starts", "running", "succeeded", "bad-input"],
)
def test_training_plan(
    dataset: Any,
    observed: StepObservation,
    start: bool,
    succeeded: tuple[str, str],
    creates_model: bool,
) -> None:
    plan = training_planner.plan(
        b.ref("BertTraining", "run"),
        b.training(),
        dataset,
        observed,
        model_exists=False,
        config=b.CONFIG,
        now=b.NOW,
    )
    assert (plan.start is not None) is start
    assert cond(plan, "Succeeded") == succeeded
    assert bool(plan.create) is creates_model
    assert plan.status is not None
    if start:
        assert plan.start is not None
        step = plan.start.spec
        assert isinstance(step, TrainStep)
        assert step.dataset_uri == "/store/ns/datasets/tweets/g1"
        assert plan.status["progress"]["display"] == "0/3"
    if observed.progress is not None:
        assert plan.status["progress"]["display"] == "2/3"
        succeeded_condition = find_condition(b.training(plan.status).status.conditions, "Succeeded")
        assert succeeded_condition is not None
        assert "loss 0.7000" in succeeded_condition.message
    if creates_model:
        child = plan.create[0]
        assert child["kind"] == "BertModel" and child["metadata"]["name"] == "run"
        assert child["spec"] == {
            "task": "sequenceClassification",
            "trainingRef": {"name": "run"},
            "family": "sentiment",
        }
        assert child["metadata"]["ownerReferences"][0]["uid"] == "uid-run"
        assert plan.status["testMetrics"]["accuracy"] == 0.8
        assert plan.status["progress"]["display"] == "3/3"


def test_argo_engine_starts_its_step() -> None:
    """Accepted now: the reconciler hands the same step to the Argo runtime."""
    plan = training_planner.plan(
        b.ref("BertTraining", "run"),
        b.training(engine="argo"),
        b.ready_dataset(),
        b.absent(),
        model_exists=False,
        config=b.CONFIG,
        now=b.NOW,
    )
    assert plan.start is not None and plan.start.kind == "train"
    assert cond(plan, "Succeeded")[0] == "Unknown"


def test_training_replicas_and_resources_reach_the_step() -> None:
    training = b.training(replicas=2, resources={"cpu": "2", "memory": "4Gi", "gpu": 1})
    plan = training_planner.plan(
        b.ref("BertTraining", "run"),
        training,
        b.ready_dataset(),
        b.absent(),
        model_exists=False,
        config=b.CONFIG,
        now=b.NOW,
    )
    assert plan.start is not None
    assert (plan.start.replicas, plan.start.cpu, plan.start.memory, plan.start.gpu) == (
        2,
        "2",
        "4Gi",
        1,
    )


def test_completed_training_recreates_a_lost_model_only() -> None:
    done = training_planner.plan(
        b.ref("BertTraining", "run"),
        b.training(),
        b.ready_dataset(),
        TRAINED,
        model_exists=False,
        config=b.CONFIG,
        now=b.NOW,
    )
    settled = b.training(done.status)
    lost = training_planner.plan(
        b.ref("BertTraining", "run"),
        settled,
        b.ready_dataset(),
        b.absent(),
        model_exists=False,
        config=b.CONFIG,
        now=b.NOW,
    )
    assert [c["kind"] for c in lost.create] == ["BertModel"] and lost.status is None
    there = training_planner.plan(
        b.ref("BertTraining", "run"),
        settled,
        b.ready_dataset(),
        b.absent(),
        model_exists=True,
        config=b.CONFIG,
        now=b.NOW,
    )
    assert there.empty


@pytest.mark.parametrize(
    ("trigger", "labels"),
    [
        (None, {}),
        ({"reason": "Manual"}, {}),
        ({"reason": "DriftDetected", "deployment": "food"}, {"bertops.io/retrained-for": "food"}),
        (
            {"reason": "DriftDetected", "deployment": "food", "shareWithFamily": True},
            {"bertops.io/retrained-for": "food", "bertops.io/shared-with-family": "true"},
        ),
    ],
    ids=["user's run", "trigger without a deployment", "retrained for food", "shared"],
)
def test_registered_model_names_the_deployment_it_was_retrained_for(
    trigger: dict[str, Any] | None, labels: dict[str, str]
) -> None:
    spec = b.training(trigger=trigger).spec if trigger else b.training().spec
    body = training_planner.model_manifest(b.ref("BertTraining", "food-retrain-1"), spec)
    found = body["metadata"]["labels"]
    assert {k: v for k, v in found.items() if k.endswith(("retrained-for", "family"))} == {
        "bertops.io/family": "sentiment",
        **labels,
    }


# -- BertModel -----------------------------------------------------------------------------


def manifest() -> ModelManifest:
    return ModelManifest(
        name="run",
        labels=["neg", "pos"],
        files=[FileDigest(path="model.safetensors", sha256="00", bytes=2_500_000)],
        metrics={"test": {"accuracy": 0.8, "macroF1": 0.75}},
        measurements={"parameters": 600000},
    )


def test_model_from_training_verifies_manifest() -> None:
    trained = b.training(
        {
            "conditions": [b.condition("Succeeded", "True", "Completed").to_wire()],
            "artifactUri": "/store/m",
        }
    )
    info = ArtifactInfo(uri="/store/m", manifest=manifest(), manifest_sha256="ff")
    plan = model_planner.plan(
        b.ref("BertModel", "m"),
        b.model(trainingRef={"name": "run"}),
        model_planner.ModelWorld(training=trained, artifact=info),
        config=b.CONFIG,
        now=b.NOW,
    )
    assert cond(plan, "Ready") == ("True", "Verified")
    assert plan.status is not None
    assert plan.status["size"]["display"] == "2.5MB"
    assert plan.status["metrics"]["macroF1"] == 0.75


def test_model_tampered_artifact_is_refused() -> None:
    trained = b.training(
        {
            "conditions": [b.condition("Succeeded", "True", "Completed").to_wire()],
            "artifactUri": "/store/m",
        }
    )
    info = ArtifactInfo(
        uri="/store/m", manifest=manifest(), problems=["sha256 mismatch for model.safetensors"]
    )
    plan = model_planner.plan(
        b.ref("BertModel", "m"),
        b.model(trainingRef={"name": "run"}),
        model_planner.ModelWorld(training=trained, artifact=info),
        config=b.CONFIG,
        now=b.NOW,
    )
    assert cond(plan, "Ready") == ("False", "VerificationFailed")
    assert plan.events[0].type == "Warning"


COMPRESSION = {"parentRef": {"name": "run"}, "steps": [{"method": "quantize"}]}
READY_PARENT = b.model(
    {"conditions": [b.condition("Ready", "True", "Verified").to_wire()], "artifactUri": "/store/m"},
    trainingRef={"name": "run"},
)


@pytest.mark.parametrize(
    ("world", "start", "ready"),
    [
        (model_planner.ModelWorld(), False, ("Unknown", "ParentNotFound")),
        (
            model_planner.ModelWorld(parent=b.model(trainingRef={"name": "run"})),
            False,
            ("Unknown", "WaitingForParent"),
        ),
        (
            model_planner.ModelWorld(parent=READY_PARENT, dataset_problem="no dataset"),
            False,
            ("Unknown", "DatasetNotFound"),
        ),
        (
            model_planner.ModelWorld(parent=READY_PARENT, dataset_uri="/store/d"),
            True,
            ("Unknown", "Compressing"),
        ),
        (
            model_planner.ModelWorld(
                parent=READY_PARENT,
                dataset_uri="/store/d",
                step=b.failed(
                    "compress",
                    2,
                    "macro-F1 dropped 0.30 > 0.01",
                    reason="QualityGateFailed",
                    details={"qualityDelta": {"macroF1": -0.3}},
                ),
            ),
            False,
            ("False", "QualityGateFailed"),
        ),
    ],
    ids=["no-parent", "parent-not-ready", "no-dataset", "starts", "gate-failed"],
)
def test_compression_plan(world: Any, start: bool, ready: tuple[str, str]) -> None:
    plan = model_planner.plan(
        b.ref("BertModel", "m"), b.model(compression=COMPRESSION), world, config=b.CONFIG, now=b.NOW
    )
    assert (plan.start is not None) is start
    assert cond(plan, "Ready") == ready
    if start:
        assert plan.start is not None
        step = plan.start.spec
        assert isinstance(step, CompressStep)
        assert (step.kind, step.parent_uri, step.dataset_uri) == (
            "compress",
            "/store/m",
            "/store/d",
        )
    if ready[1] == "QualityGateFailed":
        assert plan.status is not None
        assert plan.status["qualityDelta"]["macroF1"] == -0.3
