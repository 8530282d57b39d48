"""Spec checks the planners run before any step starts, and the typed error they raise.

What the API server cannot know is checked here: the operator's URI allowlist, whether
this operator version supports the task, whether a Secret reference can be honoured by
the runtime. A refusal is a :class:`SpecError`, which the planners turn into a False
condition with its reason and a Warning Event (never an ``assert``). Also the Warning a
planner posts when a step result carries fields this operator does not know.

Pure; called by :mod:`.dataset`, :mod:`.training` and :mod:`.model`.
"""

from __future__ import annotations

from bertops.api import dataset as dataset_api
from bertops.api import model as model_api
from bertops.api import reasons
from bertops.api import training as training_api
from bertops.api.sources import ModelSource
from bertops.api.steps import StepResult
from bertops.operator.config import OperatorConfig
from bertops.operator.objects import Event
from bertops.operator.uris import looks_like_uri, refusals

REASON_UNKNOWN_RESULT_FIELDS = "UnknownResultFields"


class SpecError(Exception):
    """A spec this operator refuses to act on; becomes ``<condition>=False, reason``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _source_uris(prefix: str, source: ModelSource | None) -> dict[str, str | None]:
    if source is None:
        return {}
    tokenizer = source.tokenizer if source.tokenizer and looks_like_uri(source.tokenizer) else None
    return {f"{prefix}.path": source.path, f"{prefix}.tokenizer": tokenizer}


def _check_uris(named: dict[str, str | None], config: OperatorConfig, namespace: str) -> None:
    refused = refusals(named, config, namespace)
    if refused:
        raise SpecError(
            reasons.REASON_INVALID_SPEC,
            "; ".join(refused) + " (the operator's URI allowlist: --allow-uri-prefix, "
            "--allow-uri-scheme)",
        )


def secret_names(*sources: object) -> tuple[str, ...]:
    """The Secrets named by credentialsSecretRef on the given sources, in order, once."""
    names: list[str] = []
    for source in sources:
        ref = getattr(source, "credentials_secret_ref", None)
        if ref is not None and ref.name not in names:
            names.append(ref.name)
    return tuple(names)


def _check_secrets(names: tuple[str, ...], config: OperatorConfig) -> None:
    if names and config.runtime != "kubernetes":
        raise SpecError(
            reasons.REASON_INVALID_SPEC,
            f"credentialsSecretRef ({', '.join(names)}) needs the kubernetes runtime, which "
            "passes the Secret to the step pod as environment; with the local runtime give "
            "the operator process the credentials instead",
        )


def _check_task(task: str) -> None:
    if task not in training_api.SUPPORTED_TASKS:
        raise SpecError(
            reasons.REASON_UNSUPPORTED_TASK,
            f"task {task!r} is not supported by this operator version yet; "
            f"supported: {', '.join(training_api.SUPPORTED_TASKS)}",
        )


def dataset_secret_names(spec: dataset_api.BertDatasetSpec) -> tuple[str, ...]:
    """The Secrets the prepare step needs: every data source's and the tokenizer's."""
    return secret_names(spec.source, *(spec.additional_sources or ()), spec.tokenizer.base_model)


def check_dataset(
    spec: dataset_api.BertDatasetSpec, config: OperatorConfig, namespace: str
) -> None:
    base = spec.tokenizer.base_model
    # Every additional source is read by the same step as spec.source, so each one is
    # held to the same allowlist (a retraining appends feedback sources here).
    extra = {
        f"spec.additionalSources[{i}].uri": source.uri
        for i, source in enumerate(spec.additional_sources or ())
    }
    _check_uris(
        {
            "spec.source.uri": spec.source.uri,
            **extra,
            "spec.outputUri": spec.output_uri,
            **_source_uris("spec.tokenizer.baseModel", base),
        },
        config,
        namespace,
    )
    _check_secrets(dataset_secret_names(spec), config)


def check_training(
    spec: training_api.BertTrainingSpec, config: OperatorConfig, namespace: str
) -> None:
    _check_task(spec.task)
    # engine 'argo' needs no check here: the reconciler runs it with the Argo runtime,
    # which reports missing Argo CRDs in the condition itself.
    _check_uris(
        {"spec.outputUri": spec.output_uri, **_source_uris("spec.baseModel", spec.base_model)},
        config,
        namespace,
    )
    _check_secrets(secret_names(spec.base_model), config)


def check_model(spec: model_api.BertModelSpec, config: OperatorConfig, namespace: str) -> None:
    """For the BertModels that run a step (compression, evaluation) or whose artifact the
    operator reads (artifactUri)."""
    if spec.compression is not None or spec.evaluation_dataset_ref is not None:
        _check_task(spec.task)
    _check_uris({"spec.artifactUri": spec.artifact_uri}, config, namespace)


def unknown_fields(result: StepResult | None) -> list[Event]:
    """A Warning when a result has detail fields this operator does not know: they stay in
    the result document, but nothing of them reaches status."""
    if result is None or result.details is None or not result.details.unknown_keys:
        return []
    return [
        Event(
            "Warning",
            REASON_UNKNOWN_RESULT_FIELDS,
            f"the {result.kind} result has fields this operator does not know: "
            f"{', '.join(result.details.unknown_keys)} (ignored in status; is the trainer "
            "newer than the operator?)",
        )
    ]
