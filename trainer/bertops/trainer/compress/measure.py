"""Measurements of a model variant on the machine that runs the step: latency p50/p95 at
batch 1 and batch 32 (sequence length 128, full attention), throughput, parameters and
bytes on disk.

Called by :mod:`bertops.trainer.compress.finish` (parent and variant are timed
together), by :mod:`bertops.trainer.compress.publish` (bytes on disk) and by
``benchmarks/compress_bench.py`` (every variant at once). Runners are timed in
interleaved rounds (the order rotating each round), so load from other processes on a
shared machine falls on all of them alike and ratios taken within a round stay
meaningful even when absolute times drift (:func:`round_ratios` gives their median and
spread); each block of timed calls starts with untimed ones, so the thread pools of the
previous runner (still spinning) do not count against the next.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
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


@dataclass
class Timings:
    """Milliseconds per (runner, batch size): every timed call, and each round's median
    (rounds are what ratios are taken over: both runners saw the same load then)."""

    calls: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    rounds: dict[tuple[str, int], list[float]] = field(default_factory=dict)


def interleave(
    runners: dict[str, Forward],
    batches: dict[int, dict[str, torch.Tensor]],
    budget: Budget | None = None,
    on_round: Callable[[int], None] | None = None,
) -> Timings:
    """Time every runner on every batch in rounds (A B C, B C A, ...): the order rotates
    each round so no runner always follows the same one. ``on_round(number)`` runs after
    each round (the benchmark prints the load average there)."""
    budget = budget or Budget()
    names = list(runners)
    out = Timings(
        calls={(n, size): [] for n in names for size in batches},
        rounds={(n, size): [] for n in names for size in batches},
    )
    smallest = batches[min(batches)]
    for forward in runners.values():
        for _ in range(budget.warmup):
            forward(smallest)
        for batch in batches.values():
            forward(batch)
    for number in range(budget.rounds):
        shift = number % len(names)
        order = names[shift:] + names[:shift]
        for size, batch in batches.items():
            count = budget.batch1_calls if size == 1 else budget.batch32_calls
            for name in order:
                forward = runners[name]
                # Untimed calls when switching runners: onnxruntime's and OpenMP's
                # worker threads keep spinning for a while after a call, and would
                # otherwise steal the cores from whichever runner comes next.
                for _ in range(budget.switch_calls):
                    forward(smallest)
                times = []
                for _ in range(count):
                    started = time.perf_counter()
                    forward(batch)
                    times.append((time.perf_counter() - started) * 1000)
                out.calls[(name, size)].extend(times)
                out.rounds[(name, size)].append(float(np.median(times)))
        if on_round is not None:
            on_round(number + 1)
    return out


def latency(
    runners: dict[str, Forward],
    vocab_size: int,
    budget: Budget | None = None,
    length: int = SEQUENCE_LENGTH,
    timings: Timings | None = None,
) -> dict[str, Latency]:
    """Latency of every runner, measured round-robin (:func:`interleave`). ``length`` is
    128 unless the model's position embeddings are shorter (tiny test models); pass
    ``timings`` to summarise ones already taken."""
    if timings is None:
        batches = {size: synthetic_batch(size, vocab_size, length=length) for size in (1, 32)}
        timings = interleave(runners, batches, budget)
    out = {}
    for name in runners:
        b1 = np.asarray(timings.calls[(name, 1)])
        b32 = np.asarray(timings.calls[(name, 32)])
        out[name] = Latency(
            p50_batch1_ms=round(float(np.percentile(b1, 50)), 3),
            p95_batch1_ms=round(float(np.percentile(b1, 95)), 3),
            p50_batch32_ms=round(float(np.percentile(b32, 50)), 3),
            p95_batch32_ms=round(float(np.percentile(b32, 95)), 3),
            throughput_per_second=round(32_000 / float(np.percentile(b32, 50)), 2),
        )
    return out


def round_ratios(variant: list[float], base: list[float]) -> dict[str, float]:
    """Median and spread of the per-round ratios variant/base (the same round's times,
    taken under the same load): median, quartiles, min and max."""
    values = np.asarray(variant) / np.asarray(base)
    p25, p50, p75 = np.percentile(values, [25, 50, 75])
    return {
        "median": round(float(p50), 4),
        "p25": round(float(p25), 4),
        "p75": round(float(p75), 4),
        "min": round(float(values.min()), 4),
        "max": round(float(values.max()), 4),
    }


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
