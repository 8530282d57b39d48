"""A short training loop shared by the compression methods: the recovery fine-tune after
pruning (which must keep pruned weights at zero) and knowledge distillation (soft teacher
logits plus hard labels).

Called by :mod:`bertops.trainer.compress.methods`. Deliberately small: single process,
AdamW with linear warmup/decay and gradient clipping like the train step; hyper-parameters
(learning rate, batch size, seed) come from the parent's recorded training run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bertops.trainer.evaluate import collate
from bertops.trainer.progress import Progress


@dataclass(frozen=True)
class TuneSettings:
    epochs: int
    learning_rate: float = 5e-5
    batch_size: int = 32
    seed: int = 0
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0

    @classmethod
    def from_hyperparameters(cls, epochs: int, hp: dict[str, str] | None) -> TuneSettings:
        """Settings of the parent's training run (lineage stores them as strings)."""
        hp = hp or {}

        def number(key: str, default: float) -> float:
            try:
                return float(hp.get(key, default))
            except ValueError:
                return default

        return cls(
            epochs=epochs,
            learning_rate=number("learningRate", 5e-5),
            batch_size=max(1, int(number("batchSize", 32))),
            seed=int(number("seed", 0)),
            weight_decay=number("weightDecay", 0.01),
            max_grad_norm=number("maxGradNorm", 1.0),
        )


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels).
    The T^2 keeps the soft term's gradient scale independent of T (Hinton et al., 2015)."""
    soft = (
        torch.nn.functional.kl_div(
            torch.log_softmax(student.float() / temperature, dim=-1),
            torch.log_softmax(teacher.float() / temperature, dim=-1),
            reduction="batchmean",
            log_target=True,
        )
        * temperature**2
    )
    hard = torch.nn.functional.cross_entropy(student.float(), target)
    return alpha * soft + (1 - alpha) * hard


def train(
    model: Any,
    ids: list[list[int]],
    labels: list[int],
    settings: TuneSettings,
    *,
    pad_id: int,
    progress: Progress,
    what: str,
    teacher_logits: torch.Tensor | None = None,
    temperature: float = 1.0,
    alpha: float = 0.0,
    after_step: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place for ``settings.epochs``; returns loss per epoch and rows/s."""
    from transformers import get_linear_schedule_with_warmup

    generator = torch.Generator().manual_seed(settings.seed)
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": settings.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=settings.learning_rate,
    )
    per_epoch = math.ceil(len(ids) / settings.batch_size)
    total = per_epoch * settings.epochs
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(settings.warmup_ratio * total), total
    )
    history: list[float] = []
    started, seen = time.monotonic(), 0
    model.train()
    for epoch in range(1, settings.epochs + 1):
        order = torch.randperm(len(ids), generator=generator).tolist()
        running = 0.0
        for start in range(0, len(order), settings.batch_size):
            chunk = order[start : start + settings.batch_size]
            batch = collate([ids[i] for i in chunk], pad_id, torch.device("cpu"))
            target = torch.as_tensor([labels[i] for i in chunk])
            logits = model(**batch).logits
            if teacher_logits is not None:
                loss = distillation_loss(logits, teacher_logits[chunk], target, temperature, alpha)
            else:
                loss = torch.nn.functional.cross_entropy(logits.float(), target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if after_step is not None:
                after_step()
            running += float(loss.detach())
            seen += len(chunk)
        history.append(running / per_epoch)
        progress.emit(
            "epoch",
            epoch=epoch,
            total_epochs=settings.epochs,
            loss=history[-1],
            samples_per_second=seen / max(time.monotonic() - started, 1e-9),
            message=f"{what}: epoch {epoch}/{settings.epochs}",
        )
    model.eval()
    return {
        "epochs": settings.epochs,
        "loss": history,
        "samplesPerSecond": seen / max(time.monotonic() - started, 1e-9),
        "learningRate": settings.learning_rate,
        "batchSize": settings.batch_size,
    }
