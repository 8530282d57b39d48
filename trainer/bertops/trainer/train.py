"""The ``train`` step: fine-tune a sequence classifier on a prepared dataset, in one
process or as N torch.distributed ranks, with per-epoch checkpoints and automatic resume,
and write a model artifact.

Called through :func:`bertops.trainer.steps.run_step` (CLI: ``bertops trainer train``; N
local ranks: ``bertops trainer launch --nproc N train ...``). Model artifact layout
(``output_uri``)::

    model.safetensors config.json          weights and transformers config (id2label)
    tokenizer.json tokenizer_config.json   the dataset's tokenizer (it produced the ids)
    labels.json metrics.json               label map; per-epoch history, test report
    bertops-model.json                     ModelManifest: sha256 per file, lineage

Checkpoints go to ``checkpoint_uri`` (default ``output_uri + ".ckpt"``) and are removed
once the artifact is in place. Rank 0 writes everything; other ranks only compute.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import signal
import subprocess
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from bertops.api.artifacts import MODEL_MANIFEST, ModelManifest, digest_folder
from bertops.api.model import Lineage
from bertops.api.steps import StepResult, TrainStep
from bertops.api.training import Hyperparameters
from bertops.trainer import artifacts_io, checkpoints, distributed, models, prepare
from bertops.trainer.errors import BadInputError
from bertops.trainer.evaluate import autocast, collate, score, state_digest
from bertops.trainer.metrics import majority_baseline, summary
from bertops.trainer.progress import Progress, eta_seconds

LABELS_FILE = "labels.json"
METRICS_FILE = "metrics.json"
# Test hook: hard-kill the process (SIGKILL, no cleanup) right after this epoch's
# checkpoint, so tests can prove resume works after a real crash.
CRASH_AFTER_EPOCH_ENV = "BERTOPS_TEST_CRASH_AFTER_EPOCH"
LOG_EVERY_ENV = "BERTOPS_LOG_EVERY_STEPS"


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def code_version() -> str:
    """bertops version plus the git commit when run from a checkout (or the env's)."""
    if env := os.environ.get("BERTOPS_CODE_VERSION"):
        return env
    from importlib.metadata import PackageNotFoundError, version

    try:
        text = f"bertops {version('bertops')}"
    except PackageNotFoundError:
        text = "bertops (not installed)"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent,
            capture_output=True, text=True, timeout=5, check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return f"{text} git:{commit}" if commit else text


def resolve_amp(hp: Hyperparameters, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, needs a GradScaler). auto: bf16 or fp16 on CUDA, fp32 on CPU."""
    mode = hp.mixed_precision
    if mode == "no":
        return None, False
    if device.type == "cuda":
        if mode == "auto":
            mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return (torch.bfloat16, False) if mode == "bf16" else (torch.float16, True)
    if mode == "bf16":
        return torch.bfloat16, False  # CPU autocast supports bf16; asked for explicitly
    return None, False  # fp16 on CPU is not supported; auto means fp32 there


def fingerprint(step: TrainStep, dataset_checksum: str) -> str:
    """What makes two starts 'the same run': resume only from a matching checkpoint."""
    spec = step.training
    payload = {
        "name": step.name, "dataset": dataset_checksum, "task": spec.task,
        "base": spec.base_model.to_wire(), "hp": spec.hyperparameters.to_wire(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _improved(metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value < best if metric == "loss" else value > best


def _optimizer(model: torch.nn.Module, hp: Hyperparameters) -> torch.optim.Optimizer:
    # No weight decay on biases and LayerNorm weights (the usual BERT recipe).
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": hp.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=hp.learning_rate)


def _scheduler(optimizer: torch.optim.Optimizer, hp: Hyperparameters, total: int) -> Any:
    from transformers import (
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    warmup = int(hp.warmup_ratio * total)
    if hp.scheduler == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total)
    if hp.scheduler == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    return get_linear_schedule_with_warmup(optimizer, warmup, total)


def _rng_state() -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda.{i}"] = s
    return state


def _set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available():
        cuda = [state[k] for k in sorted(state) if k.startswith("cuda.")]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


@dataclass
class LoopState:
    epoch: int = 0  # last finished epoch
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    resumed_from: int | None = None
    train_seconds: float = 0.0
    train_cpu_seconds: float = 0.0  # process CPU time: throughput robust to busy machines
    train_samples: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"globalStep": self.global_step, "history": self.history,
                "bestValue": self.best_value, "bestEpoch": self.best_epoch,
                "badEpochs": self.bad_epochs, "trainSeconds": self.train_seconds,
                "trainCpuSeconds": self.train_cpu_seconds, "trainSamples": self.train_samples}

    @classmethod
    def from_json(cls, epoch: int, data: dict[str, Any]) -> LoopState:
        return cls(epoch=epoch, global_step=data["globalStep"], history=data["history"],
                   best_value=data["bestValue"], best_epoch=data["bestEpoch"],
                   bad_epochs=data["badEpochs"], resumed_from=epoch,
                   train_seconds=data.get("trainSeconds", 0.0),
                   train_cpu_seconds=data.get("trainCpuSeconds", 0.0),
                   train_samples=data.get("trainSamples", 0))


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
    metrics = {f"{split}.{k}": float(v) for split in ("validation", "test")
               for k, v in manifest.metrics.get(split, {}).items()}
    return StepResult(
        kind="train", name=step.name, succeeded=True, message="already trained",
        metrics=metrics, artifacts={"model": step.output_uri},
        checksums={"modelManifest": hashlib.sha256(artifacts_io.read_bytes(uri)).hexdigest(),
                   "dataset": checksum},
        details={"artifactUri": step.output_uri, "datasetChecksum": checksum,
                 "modelName": manifest.name, "reused": True},
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


def _train(step: TrainStep, progress: Progress, ctx: distributed.DistContext,
           data_dir: Path) -> StepResult:
    spec = step.training
    hp = spec.hyperparameters
    data_manifest, _ = prepare.load_prepared(data_dir)
    checksum = data_manifest.checksum
    if (existing := _existing_result(step, checksum)) is not None:
        progress.message("model artifact of this run already exists; nothing to do")
        return existing
    labels = data_manifest.labels
    max_length = int(data_manifest.tokenizer.get("maxLength", 128))
    tokenizer = models.load_tokenizer(data_dir / prepare.TOKENIZER_DIR)
    pad_id = int(tokenizer.pad_token_id or 0)
    frames = {name: prepare.read_split(data_dir, name) for name in prepare.SPLITS}
    ids = {name: [list(map(int, r)) for r in f["input_ids"]] for name, f in frames.items()}
    targets = {name: [int(x) for x in f["label"]] for name, f in frames.items()}
    if not ids["train"]:
        raise BadInputError("the prepared dataset has no training rows")

    per_rank, remainder = divmod(hp.batch_size, ctx.world_size * hp.gradient_accumulation_steps)
    if remainder or per_rank < 1:
        raise BadInputError(
            f"batchSize {hp.batch_size} must be a multiple of replicas ({ctx.world_size}) "
            f"x gradientAccumulationSteps ({hp.gradient_accumulation_steps})"
        )
    set_seed(hp.seed)
    base: Any = models.build_model(spec.task, spec.base_model, labels, hp.dropout,
                                   len(tokenizer))
    base.to(ctx.device)
    model: Any = base
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(
            base, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    amp_dtype, needs_scaler = resolve_amp(hp, ctx.device)
    scaler = torch.amp.GradScaler("cuda") if needs_scaler else None

    sampler: DistributedSampler[int] = DistributedSampler(
        range(len(ids["train"])),  # type: ignore[arg-type]  # any sized sequence works
        num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=hp.seed, drop_last=False)
    micro_per_epoch = math.ceil(len(sampler) / per_rank)
    steps_per_epoch = math.ceil(micro_per_epoch / hp.gradient_accumulation_steps)
    total_steps = steps_per_epoch * hp.epochs
    if hp.max_steps is not None:
        total_steps = min(total_steps, hp.max_steps)
    optimizer = _optimizer(base, hp)
    scheduler = _scheduler(optimizer, hp, total_steps)

    ckpt_uri = step.checkpoint_uri or f"{step.output_uri.rstrip('/')}.ckpt"
    run_id = fingerprint(step, checksum)
    loop = LoopState()
    best_state: dict[str, torch.Tensor] | None = None
    latest = checkpoints.latest_epoch(ckpt_uri)
    if latest is not None:
        ckpt = checkpoints.load(ckpt_uri, latest)
        if ckpt.state.get("fingerprint") == run_id:
            base.load_state_dict(ckpt.model)
            optimizer.load_state_dict(ckpt.optimizer)
            scheduler.load_state_dict(ckpt.scheduler)
            _set_rng_state(ckpt.rng)
            loop = LoopState.from_json(ckpt.epoch, ckpt.state)
            best_state = ckpt.best_model if ckpt.best_model is not None else ckpt.model
            progress.message(f"resumed from the checkpoint of epoch {ckpt.epoch}",
                             epoch=ckpt.epoch, step=loop.global_step)
        else:
            progress.message("checkpoints in the store belong to another run; starting fresh")

    metric_name = hp.early_stopping_metric
    has_validation = bool(ids["validation"])
    log_every = int(os.environ.get(LOG_EVERY_ENV, "0")) or max(1, steps_per_epoch // 10)
    progress.emit("start", epoch=loop.epoch + 1, total_epochs=hp.epochs,
                  step=loop.global_step, total_steps=total_steps,
                  message=f"training {spec.base_model.describe()} on {len(ids['train'])} rows, "
                  f"{ctx.world_size} rank(s), device {ctx.device.type}, "
                  f"amp {amp_dtype or 'fp32'}")
    early_stopped = False
    run_started, first_step = time.monotonic(), loop.global_step
    for epoch in range(loop.epoch + 1, hp.epochs + 1):
        if hp.max_steps is not None and loop.global_step >= hp.max_steps:
            break
        progress.emit("progress", epoch=epoch, total_epochs=hp.epochs, step=loop.global_step,
                      total_steps=total_steps, message=f"epoch {epoch} started")
        progress.bar_start(steps_per_epoch, f"epoch {epoch}/{hp.epochs}")
        model.train()
        sampler.set_epoch(epoch)
        order = list(sampler)
        epoch_started_at, epoch_cpu_started = time.monotonic(), time.process_time()
        # Summed on the device: reading a loss each step would sync a GPU every step.
        epoch_loss = torch.zeros((), device=ctx.device)
        epoch_batches, samples = 0, 0
        micro = [order[i:i + per_rank] for i in range(0, len(order), per_rank)]
        for index, chunk in enumerate(micro):
            boundary = (index + 1) % hp.gradient_accumulation_steps == 0 or index == len(micro) - 1
            batch = collate([ids["train"][i] for i in chunk], pad_id, ctx.device)
            target = torch.as_tensor([targets["train"][i] for i in chunk], device=ctx.device)
            # Accumulation micro-steps skip the gradient all-reduce (DDP no_sync).
            sync = model.no_sync() if (ctx.distributed and not boundary) else nullcontext()
            with sync:
                with autocast(ctx.device, amp_dtype):
                    logits = model(**batch).logits
                loss = torch.nn.functional.cross_entropy(logits.float(), target)
                scaled = loss / hp.gradient_accumulation_steps
                (scaler.scale(scaled) if scaler else scaled).backward()
            epoch_loss += loss.detach()
            epoch_batches += 1
            samples += len(chunk) * ctx.world_size
            if not boundary:
                continue
            if scaler:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(base.parameters(), hp.max_grad_norm)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loop.global_step += 1
            elapsed = time.monotonic() - epoch_started_at
            rate = samples / elapsed if elapsed > 0 else None
            if progress.bar_enabled:
                progress.bar_update(1, loss=f"{float(epoch_loss) / epoch_batches:.4f}")
            if loop.global_step % log_every == 0:
                # ETA from this process's own pace (a resumed run has no earlier timing).
                progress.emit(
                    "progress", epoch=epoch, total_epochs=hp.epochs, step=loop.global_step,
                    total_steps=total_steps, loss=float(epoch_loss) / epoch_batches,
                    samples_per_second=rate,
                    eta_seconds=eta_seconds(loop.global_step - first_step,
                                            total_steps - first_step,
                                            time.monotonic() - run_started),
                )
            if hp.max_steps is not None and loop.global_step >= hp.max_steps:
                break
        progress.bar_close()
        train_seconds = time.monotonic() - epoch_started_at
        loop.train_seconds += train_seconds
        loop.train_cpu_seconds += time.process_time() - epoch_cpu_started
        loop.train_samples += samples
        train_loss = float(epoch_loss) / max(epoch_batches, 1)
        record: dict[str, Any] = {"epoch": epoch, "trainLoss": train_loss,
                                  "samplesPerSecond": samples / max(train_seconds, 1e-9)}
        improved = True
        if has_validation:
            val = score(base, ids["validation"], targets["validation"], label_names=labels,
                        pad_id=pad_id, batch_size=max(per_rank, 32), ctx=ctx,
                        amp_dtype=amp_dtype)
            record["validation"] = summary(val)
            value = float(val["loss"] if metric_name == "loss" else val[metric_name])
            improved = _improved(metric_name, value, loop.best_value)
            if improved:
                loop.best_value = value
        if improved:
            loop.best_epoch, loop.bad_epochs = epoch, 0
            # A CPU copy: early stopping ends on the best epoch, not the last one.
            best_state = checkpoints.detached(base.state_dict())
        else:
            loop.bad_epochs += 1
        loop.history.append(record)
        loop.epoch = epoch
        progress.emit("epoch", epoch=epoch, total_epochs=hp.epochs, step=loop.global_step,
                      total_steps=total_steps, loss=train_loss,
                      samples_per_second=record["samplesPerSecond"],
                      validation=record.get("validation"), bestEpoch=loop.best_epoch)
        if ctx.is_main:
            uri = checkpoints.save(ckpt_uri, checkpoints.Checkpoint(
                epoch=epoch, state={"fingerprint": run_id, **loop.to_json()},
                model=checkpoints.detached(base.state_dict()),
                best_model=best_state if loop.best_epoch != epoch else None,
                optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                rng=_rng_state()))
            progress.emit("checkpoint", epoch=epoch, step=loop.global_step, message=uri)
        ctx.barrier()
        if os.environ.get(CRASH_AFTER_EPOCH_ENV) == str(epoch):
            os.kill(os.getpid(), signal.SIGKILL)
        patience = hp.early_stopping_patience
        if has_validation and patience and loop.bad_epochs >= patience:
            early_stopped = True
            progress.message(f"early stopping: no better {metric_name} for {patience} epoch(s); "
                             f"best epoch {loop.best_epoch}", epoch=epoch)
            break

    if best_state is not None:
        base.load_state_dict(best_state)
    eval_batch = max(per_rank, 32)
    scoring = partial(score, label_names=labels, pad_id=pad_id, batch_size=eval_batch,
                      ctx=ctx, amp_dtype=amp_dtype)
    validation = (scoring(base, ids["validation"], targets["validation"])
                  if has_validation else None)
    test = scoring(base, ids["test"], targets["test"]) if ids["test"] else None
    digests = ctx.all_gather_object(state_digest(base))
    throughput = loop.train_samples / loop.train_seconds if loop.train_seconds else 0.0
    baseline = majority_baseline(targets["train"], targets["test"]) if ids["test"] else None
    summaries = {k: summary(v) for k, v in (("validation", validation), ("test", test)) if v}
    model_name = step.model_name or spec.model.name or step.name
    manifest_sha = ""
    if ctx.is_main:
        lineage = Lineage(
            dataset=spec.dataset_ref.name, dataset_checksum=checksum, training_run=step.name,
            base_model=spec.base_model.describe(),
            hyperparameters={k: str(v) for k, v in hp.to_wire().items()},
            code_version=code_version(), trigger=spec.trigger,
        )
        with artifacts_io.staged_folder(step.output_uri) as folder:
            base.save_pretrained(str(folder))
            tokenizer.save_pretrained(str(folder))
            artifacts_io.write_json(folder / LABELS_FILE, {
                "labels": labels, "label2id": {n: i for i, n in enumerate(labels)}})
            artifacts_io.write_json(folder / METRICS_FILE, {
                "validation": validation, "test": test, "history": loop.history,
                "bestEpoch": loop.best_epoch, "majorityBaselineAccuracy": baseline,
            })
            manifest = ModelManifest(
                name=model_name, task=spec.task, labels=labels, max_length=max_length,
                files=digest_folder(folder), metrics=summaries, lineage=lineage,
                measurements={"parameters": sum(p.numel() for p in base.parameters()),
                              "trainSamplesPerSecond": throughput,
                              "worldSize": ctx.world_size},
                created_at=datetime.now(UTC),
            )
            text = manifest.model_dump_json(by_alias=True, indent=2, exclude_none=True)
            (folder / MODEL_MANIFEST).write_text(text)
            manifest_sha = hashlib.sha256(text.encode()).hexdigest()
        # The artifact holds everything now; checkpoints would only cost space.
        artifacts_io.remove(ckpt_uri)
    ctx.barrier()
    progress.emit("done", epoch=loop.epoch, total_epochs=hp.epochs, step=loop.global_step,
                  total_steps=total_steps, samples_per_second=throughput,
                  message=f"model written to {step.output_uri}")
    metrics = {f"{split}.{k}": v for split, values in summaries.items() for k, v in values.items()}
    metrics["samplesPerSecond"] = throughput
    metrics["epochs"] = float(loop.epoch)
    return StepResult(
        kind="train", name=step.name, succeeded=True, metrics=metrics,
        artifacts={"model": step.output_uri},
        checksums={"modelManifest": manifest_sha, "dataset": checksum},
        details={
            "artifactUri": step.output_uri, "modelName": model_name,
            "datasetChecksum": checksum,
            "validationMetrics": summaries.get("validation"),
            "testMetrics": summaries.get("test"),
            "bestEpoch": loop.best_epoch, "epochsRun": loop.epoch,
            "earlyStopped": early_stopped, "resumedFromEpoch": loop.resumed_from,
            "majorityBaselineAccuracy": baseline, "worldSize": ctx.world_size,
            "rankWeightDigests": digests, "history": loop.history,
            "device": ctx.device.type, "mixedPrecision": str(amp_dtype or "fp32"),
            "trainSeconds": loop.train_seconds, "trainCpuSeconds": loop.train_cpu_seconds,
            "trainSamples": loop.train_samples,
        },
    )
