"""The ``train`` step: fine-tune a sequence classifier on a prepared dataset, in one
process or as N torch.distributed ranks, with per-epoch checkpoints and automatic resume,
and write a model artifact (the layout of :mod:`bertops.trainer.model_artifact`).

Called through :func:`bertops.trainer.steps.run_step` (CLI: ``bertops trainer train``; N
local ranks: ``bertops trainer launch --nproc N train ...``). This module owns the step's
inputs, artifact and result; the epochs are in :mod:`bertops.trainer.epochs`, optimiser,
schedule and the NaN/inf guard in :mod:`bertops.trainer.optim`, checkpoints and resume in
:mod:`bertops.trainer.checkpoints`. Checkpoints go to ``checkpoint_uri``
(default ``output_uri + ".ckpt"``) and are removed once the artifact is in place. Rank 0
writes everything; other ranks only compute.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bertops.api.artifacts import MODEL_MANIFEST, ModelManifest
from bertops.api.model import Lineage
from bertops.api.steps import StepResult, TrainDetails, TrainStep
from bertops.trainer import artifacts_io, distributed, epochs, model_artifact, models
from bertops.trainer.errors import BadInputError
from bertops.trainer.evaluate import score, state_digest
from bertops.trainer.metrics import majority_baseline, summary
from bertops.trainer.progress import Progress


def fingerprint(step: TrainStep, dataset_checksum: str) -> str:
    """What makes two starts 'the same run': resume only from a matching checkpoint.

    The step's name is left out on purpose: it carries the attempt number, and a retried
    attempt (a killed pod, a lost node) must resume from the checkpoints of the one
    before. The checkpoint folder belongs to one object generation, and the rest pins
    the data, base model and hyperparameters."""
    spec = step.training
    payload = {
        "checkpoints": epochs.checkpoint_uri(step),
        "dataset": dataset_checksum,
        "task": spec.task,
        "base": spec.base_model.to_wire(),
        "hp": spec.hyperparameters.to_wire(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _existing_result(step: TrainStep, checksum: str) -> StepResult | None:
    """The result of this run if its artifact is already in place (a finished run that
    was started again, e.g. by a restarted operator): no second training."""
    uri = artifacts_io.join(step.output_uri, MODEL_MANIFEST)
    if not artifacts_io.exists(uri):
        return None
    try:
        manifest = ModelManifest.model_validate_json(artifacts_io.read_bytes(uri))
    except ValueError:
        return None
    lineage = manifest.lineage
    if lineage.training_run != step.name or lineage.dataset_checksum != checksum:
        return None
    metrics = {
        f"{split}.{k}": float(v)
        for split in ("validation", "test")
        for k, v in manifest.metrics.get(split, {}).items()
    }
    return StepResult(
        kind="train",
        name=step.name,
        succeeded=True,
        message="already trained",
        metrics=metrics,
        artifacts={"model": step.output_uri},
        checksums={
            "modelManifest": hashlib.sha256(artifacts_io.read_bytes(uri)).hexdigest(),
            "dataset": checksum,
        },
        details=TrainDetails(
            artifact_uri=step.output_uri,
            dataset_checksum=checksum,
            model_name=manifest.name,
            reused=True,
        ),
    )


def run_train(step: TrainStep, progress: Progress) -> StepResult:
    spec = step.training
    if spec.task not in models.TASK_MODEL_CLASSES:
        raise BadInputError(f"task {spec.task} is not supported by this trainer version yet")
    ctx = distributed.from_env()
    try:
        with artifacts_io.local_folder(step.dataset_uri, "prepared dataset") as data_dir:
            return _train(step, progress, ctx, data_dir)
    finally:
        ctx.shutdown()


def _write_model(
    run: epochs.Run,
    data: epochs.Data,
    name: str,
    summaries: dict[str, Any],
    metrics: dict[str, Any],
    throughput: float,
) -> str:
    """Rank 0 publishes the artifact; returns the sha256 of its manifest."""
    spec = run.step.training
    lineage = Lineage(
        dataset=spec.dataset_ref.name,
        dataset_checksum=data.checksum,
        training_run=run.step.name,
        base_model=spec.base_model.describe(),
        hyperparameters={k: str(v) for k, v in run.hp.to_wire().items()},
        code_version=model_artifact.code_version(),
        trigger=spec.trigger,
    )
    manifest = ModelManifest(
        name=name,
        task=spec.task,
        labels=data.labels,
        max_length=data.max_length,
        files=[],
        metrics=summaries,
        lineage=lineage,
        measurements={
            "parameters": sum(p.numel() for p in run.base.parameters()),
            "trainSamplesPerSecond": throughput,
            "worldSize": run.ctx.world_size,
        },
    )
    _, manifest_sha = model_artifact.write(
        run.step.output_uri,
        manifest,
        save_weights=lambda f: run.base.save_pretrained(str(f)),
        tokenizer=data.tokenizer,
        metrics=metrics,
    )
    return manifest_sha


@dataclass(frozen=True)
class _FinalScores:
    """The trained model's scores, computed on every rank: the artifact (rank 0) and the
    step's result both read them."""

    validation: dict[str, Any] | None
    test: dict[str, Any] | None
    summaries: dict[str, dict[str, float]]
    majority_baseline: float | None
    rank_weight_digests: list[str]
    samples_per_second: float


def _train(
    step: TrainStep, progress: Progress, ctx: distributed.DistContext, data_dir: Path
) -> StepResult:
    data = epochs.read_data(data_dir)
    if (existing := _existing_result(step, data.checksum)) is not None:
        progress.message("model artifact of this run already exists; nothing to do")
        return existing
    run = _start(step, progress, ctx, data)
    early_stopped = _run_epochs(run, data)
    scores = _final_scores(run, data)
    model_name = step.model_name or step.training.model.name or step.name
    manifest_sha = _publish(run, data, model_name, scores)
    progress.emit(
        "done",
        epoch=run.loop.epoch,
        total_epochs=run.hp.epochs,
        step=run.loop.global_step,
        total_steps=run.total_steps,
        samples_per_second=scores.samples_per_second,
        message=f"model written to {step.output_uri}",
    )
    return _result(run, data, model_name, scores, manifest_sha, early_stopped=early_stopped)


def _start(
    step: TrainStep, progress: Progress, ctx: distributed.DistContext, data: epochs.Data
) -> epochs.Run:
    """Model, optimiser and sampler, resumed from this run's last checkpoint if any."""
    run = epochs.setup(step, progress, ctx, data, fingerprint(step, data.checksum))
    epochs.resume(run)
    progress.emit(
        "start",
        epoch=run.loop.epoch + 1,
        total_epochs=run.hp.epochs,
        step=run.loop.global_step,
        total_steps=run.total_steps,
        message=f"training {step.training.base_model.describe()} on {len(data.ids['train'])} "
        f"rows, {ctx.world_size} rank(s), device {ctx.device.type}, "
        f"amp {run.amp_dtype or 'fp32'}",
    )
    return run


def _run_epochs(run: epochs.Run, data: epochs.Data) -> bool:
    """The remaining epochs, then the best epoch's weights back in the model; returns
    whether early stopping ended the run."""
    hp, loop = run.hp, run.loop
    early_stopped = False
    run_started, first_step = time.monotonic(), loop.global_step
    for epoch in range(loop.epoch + 1, hp.epochs + 1):
        if hp.max_steps is not None and loop.global_step >= hp.max_steps:
            break
        record = epochs.train_epoch(run, data, epoch, run_started, first_step)
        if epochs.end_epoch(run, data, epoch, record):
            early_stopped = True
            break
    if run.best_state is not None:
        run.base.load_state_dict(run.best_state)
    return early_stopped


def _final_scores(run: epochs.Run, data: epochs.Data) -> _FinalScores:
    """Validation and test metrics of the final model; every rank takes part (the
    forward passes and the digest gather are collective)."""
    ctx, loop = run.ctx, run.loop
    scoring = partial(
        score,
        label_names=data.labels,
        pad_id=data.pad_id,
        batch_size=max(run.per_rank, 32),
        ctx=ctx,
        amp_dtype=run.amp_dtype,
    )
    validation = (
        scoring(run.base, data.ids["validation"], data.targets["validation"])
        if data.ids["validation"]
        else None
    )
    test = scoring(run.base, data.ids["test"], data.targets["test"]) if data.ids["test"] else None
    digests = ctx.gather_digests(state_digest(run.base))
    throughput = loop.train_samples / loop.train_seconds if loop.train_seconds else 0.0
    baseline = (
        majority_baseline(data.targets["train"], data.targets["test"]) if data.ids["test"] else None
    )
    return _FinalScores(
        validation=validation,
        test=test,
        summaries={k: summary(v) for k, v in (("validation", validation), ("test", test)) if v},
        majority_baseline=baseline,
        rank_weight_digests=digests,
        samples_per_second=throughput,
    )


def _publish(run: epochs.Run, data: epochs.Data, model_name: str, scores: _FinalScores) -> str:
    """Rank 0 writes the artifact and drops the checkpoints; every rank waits for it.
    Returns the manifest's sha256 (empty on other ranks)."""
    manifest_sha = ""
    if run.ctx.is_main:
        manifest_sha = _write_model(
            run,
            data,
            model_name,
            scores.summaries,
            {
                "validation": scores.validation,
                "test": scores.test,
                "history": run.loop.history,
                "bestEpoch": run.loop.best_epoch,
                "majorityBaselineAccuracy": scores.majority_baseline,
            },
            scores.samples_per_second,
        )
        # The artifact holds everything now; checkpoints would only cost space.
        artifacts_io.remove(run.ckpt_uri)
    run.ctx.barrier()
    return manifest_sha


def _result(
    run: epochs.Run,
    data: epochs.Data,
    model_name: str,
    scores: _FinalScores,
    manifest_sha: str,
    *,
    early_stopped: bool,
) -> StepResult:
    step, ctx, loop, summaries = run.step, run.ctx, run.loop, scores.summaries
    metrics = {f"{split}.{k}": v for split, values in summaries.items() for k, v in values.items()}
    metrics["samplesPerSecond"] = scores.samples_per_second
    metrics["epochs"] = float(loop.epoch)
    return StepResult(
        kind="train",
        name=step.name,
        succeeded=True,
        metrics=metrics,
        artifacts={"model": step.output_uri},
        checksums={"modelManifest": manifest_sha, "dataset": data.checksum},
        details=TrainDetails(
            artifact_uri=step.output_uri,
            model_name=model_name,
            dataset_checksum=data.checksum,
            validation_metrics=summaries.get("validation"),
            test_metrics=summaries.get("test"),
            best_epoch=loop.best_epoch,
            epochs_run=loop.epoch,
            early_stopped=early_stopped,
            resumed_from_epoch=loop.resumed_from,
            majority_baseline_accuracy=scores.majority_baseline,
            world_size=ctx.world_size,
            rank_weight_digests=scores.rank_weight_digests,
            history=loop.history,
            device=ctx.device.type,
            mixed_precision=str(run.amp_dtype or "fp32"),
            train_seconds=loop.train_seconds,
            train_cpu_seconds=loop.train_cpu_seconds,
            train_samples=loop.train_samples,
        ),
    )
