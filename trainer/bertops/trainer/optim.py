"""The optimisation pieces of the ``train`` step around its loop: seeding, mixed
precision, AdamW with the usual BERT weight-decay split, the learning-rate schedule, the
early-stopping comparison, and the divergence guard that stops a run whose loss turned
NaN or infinite before such an epoch can be checkpointed, kept as best or registered.

Called by :mod:`bertops.trainer.train`.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import torch

from bertops.api.training import Hyperparameters
from bertops.trainer.distributed import DistContext
from bertops.trainer.errors import BadInputError

# The hyper-parameters that decide whether a run diverges, named in the error.
_STABILITY = (
    "learningRate",
    "batchSize",
    "gradientAccumulationSteps",
    "warmupRatio",
    "scheduler",
    "maxGradNorm",
    "weightDecay",
    "mixedPrecision",
    "seed",
)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


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


def improved(metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value < best if metric == "loss" else value > best


def make_optimizer(model: torch.nn.Module, hp: Hyperparameters) -> torch.optim.Optimizer:
    # No weight decay on biases and LayerNorm weights (the usual BERT recipe).
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": hp.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=hp.learning_rate)


def make_scheduler(optimizer: torch.optim.Optimizer, hp: Hyperparameters, total: int) -> Any:
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


def ensure_finite(
    value: torch.Tensor | float,
    ctx: DistContext,
    hp: Hyperparameters,
    *,
    what: str,
    epoch: int,
    step: int,
) -> None:
    """Stop the step (exit code 2, nothing written) when ``value`` is NaN or infinite on
    any rank. A sum of losses is non-finite as soon as one loss was, so checking the
    running sum covers every step before it. Every rank must call this at the same
    points: it is a collective when distributed."""
    number = float(value)
    if not ctx.any_rank(not math.isfinite(number)):
        return
    wire = hp.to_wire()
    named = ", ".join(f"{key}={wire[key]}" for key in _STABILITY if key in wire)
    shown = str(number) if not math.isfinite(number) else "not finite on another rank"
    raise BadInputError(
        f"training diverged: the {what} is {shown} by epoch {epoch}, step {step}; nothing "
        f"was kept. Hyper-parameters: {named}. Lower learningRate or maxGradNorm, raise "
        "warmupRatio, or set mixedPrecision no."
    )
