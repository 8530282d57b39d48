"""The training loop of the ``train`` step: the prepared data as the loop sees it, one
run's model, optimiser and sampler (:class:`Run`), resume from a checkpoint, and the
epochs themselves (forward/backward with gradient accumulation and DDP, validation,
best-epoch bookkeeping, checkpoint, early stopping, the NaN/inf guard).

Called by :mod:`bertops.trainer.train`, which owns the step's inputs, artifact and result.
"""

from __future__ import annotations

import math
import os
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DistributedSampler

from bertops.api.steps import TrainStep
from bertops.api.training import Hyperparameters
from bertops.trainer import checkpoints, distributed, models, optim, prepare
from bertops.trainer.checkpoints import LoopState
from bertops.trainer.errors import BadInputError
from bertops.trainer.evaluate import autocast, collate, score
from bertops.trainer.metrics import summary
from bertops.trainer.progress import Progress, eta_seconds

# Test hook: hard-kill the process (SIGKILL, no cleanup) right after this epoch's
# checkpoint, so tests can prove resume works after a real crash.
CRASH_AFTER_EPOCH_ENV = "BERTOPS_TEST_CRASH_AFTER_EPOCH"
LOG_EVERY_ENV = "BERTOPS_LOG_EVERY_STEPS"


@dataclass
class Data:
    """The prepared dataset as the loop uses it: token ids and labels per split."""

    checksum: str
    labels: list[str]
    max_length: int
    tokenizer: Any
    pad_id: int
    ids: dict[str, list[list[int]]]
    targets: dict[str, list[int]]


def read_data(data_dir: Path) -> Data:
    manifest, _ = prepare.load_prepared(data_dir)
    tokenizer = models.load_tokenizer(data_dir / prepare.TOKENIZER_DIR)
    frames = {name: prepare.read_split(data_dir, name) for name in prepare.SPLITS}
    ids = {name: [list(map(int, r)) for r in f["input_ids"]] for name, f in frames.items()}
    if not ids["train"]:
        raise BadInputError("the prepared dataset has no training rows")
    return Data(
        checksum=manifest.checksum,
        labels=manifest.labels,
        max_length=int(manifest.tokenizer.get("maxLength", 128)),
        tokenizer=tokenizer,
        pad_id=int(tokenizer.pad_token_id or 0),
        ids=ids,
        targets={name: [int(x) for x in f["label"]] for name, f in frames.items()},
    )


@dataclass
class Run:
    """One run's moving parts, built by :func:`setup` and shared by the epoch code."""

    step: TrainStep
    progress: Progress
    ctx: distributed.DistContext
    hp: Hyperparameters
    base: Any  # the model itself
    model: Any  # what runs forward: ``base``, or ``base`` wrapped in DDP
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    sampler: DistributedSampler[int]
    amp_dtype: torch.dtype | None
    per_rank: int
    steps_per_epoch: int
    total_steps: int
    log_every: int
    run_id: str
    ckpt_uri: str
    loop: LoopState
    best_state: dict[str, torch.Tensor] | None = None


def setup(
    step: TrainStep, progress: Progress, ctx: distributed.DistContext, data: Data, run_id: str
) -> Run:
    spec = step.training
    hp = spec.hyperparameters
    per_rank, remainder = divmod(hp.batch_size, ctx.world_size * hp.gradient_accumulation_steps)
    if remainder or per_rank < 1:
        raise BadInputError(
            f"batchSize {hp.batch_size} must be a multiple of replicas ({ctx.world_size}) "
            f"x gradientAccumulationSteps ({hp.gradient_accumulation_steps})"
        )
    optim.set_seed(hp.seed)
    base: Any = models.build_model(
        spec.task, spec.base_model, data.labels, hp.dropout, len(data.tokenizer)
    )
    base.to(ctx.device)
    model: Any = base
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(
            base, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    amp_dtype, needs_scaler = optim.resolve_amp(hp, ctx.device)
    sampler: DistributedSampler[int] = DistributedSampler(
        range(len(data.ids["train"])),  # type: ignore[arg-type]  # any sized sequence works
        num_replicas=ctx.world_size,
        rank=ctx.rank,
        shuffle=True,
        seed=hp.seed,
        drop_last=False,
    )
    steps_per_epoch = math.ceil(math.ceil(len(sampler) / per_rank) / hp.gradient_accumulation_steps)
    total_steps = steps_per_epoch * hp.epochs
    if hp.max_steps is not None:
        total_steps = min(total_steps, hp.max_steps)
    optimizer = optim.make_optimizer(base, hp)
    return Run(
        step=step,
        progress=progress,
        ctx=ctx,
        hp=hp,
        base=base,
        model=model,
        optimizer=optimizer,
        scheduler=optim.make_scheduler(optimizer, hp, total_steps),
        scaler=torch.amp.GradScaler("cuda") if needs_scaler else None,
        sampler=sampler,
        amp_dtype=amp_dtype,
        per_rank=per_rank,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        log_every=int(os.environ.get(LOG_EVERY_ENV, "0")) or max(1, steps_per_epoch // 10),
        run_id=run_id,
        ckpt_uri=checkpoint_uri(step),
        loop=LoopState(),
    )


def checkpoint_uri(step: TrainStep) -> str:
    """The step's checkpoint folder: one per object generation, shared by its attempts."""
    return step.checkpoint_uri or f"{step.output_uri.rstrip('/')}.ckpt"


def resume(run: Run) -> None:
    """Continue from the newest checkpoint of this run that verifies (if any)."""
    ckpt = checkpoints.resume(run.ckpt_uri, run.run_id, run.progress.message)
    if ckpt is None:
        return
    run.base.load_state_dict(ckpt.model)
    run.optimizer.load_state_dict(ckpt.optimizer)
    run.scheduler.load_state_dict(ckpt.scheduler)
    checkpoints.restore_rng(ckpt.rng)
    run.loop = LoopState.from_json(ckpt.epoch, ckpt.state)
    run.best_state = ckpt.best_model if ckpt.best_model is not None else ckpt.model
    run.progress.message(
        f"resumed from the checkpoint of epoch {ckpt.epoch}",
        epoch=ckpt.epoch,
        step=run.loop.global_step,
    )


def _forward_backward(run: Run, data: Data, chunk: list[int], *, sync: bool) -> torch.Tensor:
    device = run.ctx.device
    batch = collate([data.ids["train"][i] for i in chunk], data.pad_id, device)
    target = torch.as_tensor([data.targets["train"][i] for i in chunk], device=device)
    # Accumulation micro-steps skip the gradient all-reduce (DDP no_sync).
    with nullcontext() if sync else run.model.no_sync():
        with autocast(device, run.amp_dtype):
            logits = run.model(**batch).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), target)
        scaled = loss / run.hp.gradient_accumulation_steps
        (run.scaler.scale(scaled) if run.scaler else scaled).backward()
    return loss.detach()


def _optimizer_step(run: Run) -> None:
    if run.scaler:
        run.scaler.unscale_(run.optimizer)
    torch.nn.utils.clip_grad_norm_(run.base.parameters(), run.hp.max_grad_norm)
    if run.scaler:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.loop.global_step += 1


def train_epoch(
    run: Run, data: Data, epoch: int, started: float, first_step: int
) -> dict[str, Any]:
    """One pass over this rank's shard; the epoch's history record."""
    hp, ctx, loop, progress = run.hp, run.ctx, run.loop, run.progress
    progress.emit(
        "progress",
        epoch=epoch,
        total_epochs=hp.epochs,
        step=loop.global_step,
        total_steps=run.total_steps,
        message=f"epoch {epoch} started",
    )
    progress.bar_start(run.steps_per_epoch, f"epoch {epoch}/{hp.epochs}")
    run.model.train()
    run.sampler.set_epoch(epoch)
    order = list(run.sampler)
    epoch_started_at, epoch_cpu_started = time.monotonic(), time.process_time()
    # Summed on the device: reading a loss each step would sync a GPU every step.
    epoch_loss = torch.zeros((), device=ctx.device)
    batches, samples = 0, 0
    micro = [order[i : i + run.per_rank] for i in range(0, len(order), run.per_rank)]
    guard = partial(optim.ensure_finite, ctx=ctx, hp=hp, what="training loss", epoch=epoch)
    for index, chunk in enumerate(micro):
        boundary = (index + 1) % hp.gradient_accumulation_steps == 0 or index == len(micro) - 1
        epoch_loss += _forward_backward(run, data, chunk, sync=boundary or not ctx.distributed)
        batches += 1
        samples += len(chunk) * ctx.world_size
        if not boundary:
            continue
        _optimizer_step(run)
        elapsed = time.monotonic() - epoch_started_at
        if progress.bar_enabled:
            progress.bar_update(1, loss=f"{float(epoch_loss) / batches:.4f}")
        if loop.global_step % run.log_every == 0:
            guard(epoch_loss, step=loop.global_step)  # the same steps on every rank
            # ETA from this process's own pace (a resumed run has no earlier timing).
            progress.emit(
                "progress",
                epoch=epoch,
                total_epochs=hp.epochs,
                step=loop.global_step,
                total_steps=run.total_steps,
                loss=float(epoch_loss) / batches,
                samples_per_second=samples / elapsed if elapsed > 0 else None,
                eta_seconds=eta_seconds(
                    loop.global_step - first_step,
                    run.total_steps - first_step,
                    time.monotonic() - started,
                ),
            )
        if hp.max_steps is not None and loop.global_step >= hp.max_steps:
            break
    progress.bar_close()
    # Before anything is validated, kept as best or checkpointed: a sum of losses is
    # non-finite once any loss was, and the weights once any update was.
    guard(epoch_loss, step=loop.global_step)
    weights = torch.stack([p.detach().float().norm() for p in run.base.parameters()]).sum()
    guard(weights, step=loop.global_step, what="norm of the weights")
    train_seconds = time.monotonic() - epoch_started_at
    loop.train_seconds += train_seconds
    loop.train_cpu_seconds += time.process_time() - epoch_cpu_started
    loop.train_samples += samples
    return {
        "epoch": epoch,
        "trainLoss": float(epoch_loss) / max(batches, 1),
        "samplesPerSecond": samples / max(train_seconds, 1e-9),
    }


def end_epoch(run: Run, data: Data, epoch: int, record: dict[str, Any]) -> bool:
    """Validation, best-epoch bookkeeping, checkpoint, early stopping; True to stop."""
    hp, ctx, loop, progress = run.hp, run.ctx, run.loop, run.progress
    metric_name = hp.early_stopping_metric
    improved = True
    if data.ids["validation"]:
        val = score(
            run.base,
            data.ids["validation"],
            data.targets["validation"],
            label_names=data.labels,
            pad_id=data.pad_id,
            batch_size=max(run.per_rank, 32),
            ctx=ctx,
            amp_dtype=run.amp_dtype,
        )
        record["validation"] = summary(val)
        optim.ensure_finite(
            val["loss"], ctx, hp, what="validation loss", epoch=epoch, step=loop.global_step
        )
        value = float(val["loss"] if metric_name == "loss" else val[metric_name])
        improved = optim.improved(metric_name, value, loop.best_value)
        if improved:
            loop.best_value = value
    if improved:
        loop.best_epoch, loop.bad_epochs = epoch, 0
        # A CPU copy: early stopping ends on the best epoch, not the last one.
        run.best_state = checkpoints.detached(run.base.state_dict())
    else:
        loop.bad_epochs += 1
    loop.history.append(record)
    loop.epoch = epoch
    progress.emit(
        "epoch",
        epoch=epoch,
        total_epochs=hp.epochs,
        step=loop.global_step,
        total_steps=run.total_steps,
        loss=record["trainLoss"],
        samples_per_second=record["samplesPerSecond"],
        validation=record.get("validation"),
        bestEpoch=loop.best_epoch,
    )
    if ctx.is_main:
        uri = checkpoints.save(
            run.ckpt_uri,
            checkpoints.Checkpoint(
                epoch=epoch,
                state={"fingerprint": run.run_id, **loop.to_json()},
                model=checkpoints.detached(run.base.state_dict()),
                best_model=run.best_state if loop.best_epoch != epoch else None,
                optimizer=run.optimizer.state_dict(),
                scheduler=run.scheduler.state_dict(),
                rng=checkpoints.rng_state(),
            ),
        )
        progress.emit("checkpoint", epoch=epoch, step=loop.global_step, message=uri)
    ctx.barrier()
    if os.environ.get(CRASH_AFTER_EPOCH_ENV) == str(epoch):
        os.kill(os.getpid(), signal.SIGKILL)
    patience = hp.early_stopping_patience
    if data.ids["validation"] and patience and loop.bad_epochs >= patience:
        progress.message(
            f"early stopping: no better {metric_name} for {patience} epoch(s); "
            f"best epoch {loop.best_epoch}",
            epoch=epoch,
        )
        return True
    return False
