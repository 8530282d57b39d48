"""Measurements of a model variant on the machine that runs the step: latency p50/p95 at
batch 1 and batch 32 (sequence length 128, full attention), throughput, parameters and
bytes on disk.

Called by :mod:`bertops.trainer.compress.pipeline` (parent and variant are timed
together) and by ``benchmarks/compress_bench.py`` (every variant at once). Runners are
timed in interleaved rounds, so load from other processes on a shared machine falls on
all of them alike and the ratios stay meaningful even when absolute times drift; each
block of timed calls starts with untimed ones, so the thread pools of the previous
runner (still spinning) do not count against the next.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertops.api.model import Latency

SEQUENCE_LENGTH = 128
Forward = Callable[[dict[str, torch.Tensor]], Any]


@dataclass(frozen=True)
class Budget:
    """How many timed calls: rounds x calls per round, per batch size."""

    rounds: int = 6
    batch1_calls: int = 5
    batch32_calls: int = 1
    warmup: int = 2
    switch_calls: int = 2


def torch_forward(model: Any) -> Forward:
    def forward(batch: dict[str, torch.Tensor]) -> Any:
        with torch.inference_mode():
            return model(**batch).logits

    return forward


def onnx_forward(path: Path, threads: int | None = None) -> Forward:
    from bertops.trainer.compress import onnx_export

    sess = onnx_export.session(path, threads)
    return lambda batch: onnx_export.run(sess, batch)


def synthetic_batch(
    batch_size: int, vocab_size: int, seed: int = 0, length: int = SEQUENCE_LENGTH
) -> dict[str, torch.Tensor]:
    """Fixed random token ids (no padding): every variant sees the same."""
    generator = torch.Generator().manual_seed(seed + batch_size)
    low = min(1000, vocab_size // 2)  # above BERT's special and [unused] tokens
    ids = torch.randint(low, vocab_size, (batch_size, length), generator=generator)
    ids[:, 0] = 101 if vocab_size > 102 else 0
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def latency(
    runners: dict[str, Forward],
    vocab_size: int,
    budget: Budget | None = None,
    length: int = SEQUENCE_LENGTH,
) -> dict[str, Latency]:
    """Latency of every runner, measured round-robin. ``length`` is 128 unless the model's
    position embeddings are shorter (tiny test models)."""
    budget = budget or Budget()
    batches = {size: synthetic_batch(size, vocab_size, length=length) for size in (1, 32)}
    times: dict[tuple[str, int], list[float]] = {
        (name, size): [] for name in runners for size in batches
    }
    for forward in runners.values():
        for _ in range(budget.warmup):
            forward(batches[1])
        forward(batches[32])
    calls = {1: budget.batch1_calls, 32: budget.batch32_calls}
    for _ in range(budget.rounds):
        for size, batch in batches.items():
            for name, forward in runners.items():
                # Untimed calls when switching runners: onnxruntime's and OpenMP's
                # worker threads keep spinning for a while after a call, and would
                # otherwise steal the cores from whichever runner comes next.
                for _ in range(budget.switch_calls):
                    forward(batches[1])
                for _ in range(calls[size]):
                    started = time.perf_counter()
                    forward(batch)
                    times[(name, size)].append(time.perf_counter() - started)
    out = {}
    for name in runners:
        b1 = np.asarray(times[(name, 1)]) * 1000
        b32 = np.asarray(times[(name, 32)]) * 1000
        out[name] = Latency(
            p50_batch1_ms=round(float(np.percentile(b1, 50)), 3),
            p95_batch1_ms=round(float(np.percentile(b1, 95)), 3),
            p50_batch32_ms=round(float(np.percentile(b32, 50)), 3),
            p95_batch32_ms=round(float(np.percentile(b32, 95)), 3),
            throughput_per_second=round(32_000 / float(np.percentile(b32, 50)), 2),
        )
    return out


def latency_json(value: Latency) -> dict[str, Any]:
    """The camelCase keys the operator copies into status.latency."""
    return value.model_dump(by_alias=True, exclude_none=True)


def ratios(variant: Latency, parent: Latency) -> dict[str, float]:
    def ratio(a: float | None, b: float | None) -> float:
        return round(a / b, 4) if a is not None and b else float("nan")

    return {
        "batch1": ratio(variant.p50_batch1_ms, parent.p50_batch1_ms),
        "batch32": ratio(variant.p50_batch32_ms, parent.p50_batch32_ms),
    }


def folder_bytes(folder: Path, exclude: tuple[str, ...] = ()) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name not in exclude)
