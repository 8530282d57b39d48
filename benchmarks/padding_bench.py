"""Benchmark of padding and length bucketing on mixed-length texts (not a test): is
grouping similar lengths across the batcher's queue worth adding to the model server?

In process, no HTTP: the real all-MiniLM-L6 with a 3-class head (FP32 torch, seq <= 128)
classifies a queue of ``--queue`` texts (single tweets and ~128-token texts mixed at
random, ``bench_common.corpus("mixed")``) in batches of ``--batch`` texts, four ways:

- ``fifo``: batches in arrival order, each run as the server does (sorted by length, in
  chunks of 16, each padded to its longest text): today's behaviour,
- ``bucketed``: the queue sorted by length first, then cut into batches: what length
  bucketing across the queue would give (best case: every text waits for its bucket),
- ``no-sort``: arrival order, chunks of 16 without the sort (padding per chunk only),
- ``pad-batch``: arrival order, each batch one call padded to its longest text.

The variants are interleaved in rounds on the same texts (a fresh sample per round) and
the report is the padded tokens each computes (the work: exact, whatever else runs on
the machine), the median time per queue and the median of the per-round time ratios to
``fifo`` with min..max. Bucketing can only differ from ``fifo`` when more than one
batch is queued (a queue of at most ``--batch`` texts is one batch either way). Run niced:

    nice .venv/bin/python benchmarks/padding_bench.py [--rounds 5] [--queue 64]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Sibling scripts, not a package: found through the path entry above.
from bench_common import build_minilm, corpus, load_line, spread


def plans(batch: int, chunk: int) -> dict[str, Callable[[list[str]], list[list[str]]]]:
    """Each variant as the model calls (chunks, each padded to its longest text) it
    makes for a whole queue; ``fifo`` is what the server's batcher + model do today."""

    def batches(queue: list[str]) -> list[list[str]]:
        return [queue[i : i + batch] for i in range(0, len(queue), batch)]

    def cut(texts: list[str], size: int) -> list[list[str]]:
        return [texts[i : i + size] for i in range(0, len(texts), size)]

    def fifo(queue: list[str]) -> list[list[str]]:
        # _Tokenizing.predict: sorted by characters within the batch, chunks of 16.
        return [c for texts in batches(queue) for c in cut(sorted(texts, key=len), chunk)]

    return {
        "fifo": fifo,
        "bucketed": lambda queue: fifo(sorted(queue, key=len)),
        "no-sort": lambda queue: [c for texts in batches(queue) for c in cut(texts, chunk)],
        "pad-batch": batches,
    }


def padded_tokens(model: Any, chunks: list[list[str]]) -> int:
    """Tokens the model computes on (rows x longest row, per chunk): the work, which
    unlike the time does not depend on what else runs on the machine."""
    total = 0
    for texts in chunks:
        ids = model.tokenizer(texts, truncation=True, max_length=model.max_length)["input_ids"]
        total += len(ids) * max(map(len, ids))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--queue", type=int, default=64, help="Texts queued at once.")
    parser.add_argument("--batch", type=int, default=32, help="The server's max batch size.")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from bertops.server.model import ServedModel

    print(load_line("before"), file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bertops-padbench-") as scratch:
        artifact = build_minilm(Path(scratch) / "minilm", "minilm")
        served = ServedModel(str(artifact), threads=args.threads)
        served.load()
    model: Any = served.classifier  # a TorchClassifier: its chunk calls are timed
    runs = plans(args.batch, model.chunk)
    texts = corpus("mixed", 1000)
    rng = random.Random(0)
    times: dict[str, list[float]] = {name: [] for name in runs}
    tokens: dict[str, int] = dict.fromkeys(runs, 0)
    for index in range(args.rounds):
        queue = rng.sample(texts, args.queue)
        names = list(runs)
        shift = index % len(names)  # rotate, so no variant always runs first
        for name in names[shift:] + names[:shift]:
            chunks = runs[name](queue)
            tokens[name] += padded_tokens(model, chunks)
            started = time.perf_counter()
            for chunk in chunks:
                model._predict_chunk(chunk)
            times[name].append(time.perf_counter() - started)
        print(
            f"round {index + 1}/{args.rounds} "
            + "  ".join(f"{n} {times[n][-1]:.2f}s" for n in runs)
            + f"  ({load_line('now')})",
            file=sys.stderr,
            flush=True,
        )
    print(
        f"\nMiniLM-L6 FP32, {args.threads} threads, queue {args.queue} mixed texts "
        f"(about half ~128 tokens, half single tweets), batches of {args.batch}, "
        f"{args.rounds} rounds; {load_line('after')}"
    )
    print(
        "\n| variant | padded tokens vs fifo | s per queue, median [min..max] | texts/s | "
        "time vs fifo, median of rounds [min..max] |"
    )
    print("|---|---|---|---|---|")
    for name, values in times.items():
        mid, low, high = spread(values)
        ratio = spread(v / f for v, f in zip(values, times["fifo"], strict=True))
        print(
            f"| {name} | {tokens[name] / tokens['fifo']:.2f}x | {mid:.2f} [{low:.2f}..{high:.2f}] "
            f"| {args.queue / mid:.1f} | {ratio[0]:.2f}x [{ratio[1]:.2f}..{ratio[2]:.2f}] |"
        )


if __name__ == "__main__":
    main()
