"""Two gloo ranks on loopback (the local launcher): identical weights on both ranks and
metrics comparable to the single-process run with the same global batch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bertops.api.artifacts import MODEL_MANIFEST, ModelManifest, verify_folder
from bertops.trainer.launcher import rank_env
from tests.trainer.conftest import train_spec

pytestmark = pytest.mark.slow


def test_two_gloo_ranks_match_single_process(
    prepared: Path, trained: tuple[Path, Any], tmp_path: Path
) -> None:
    _, single = trained
    spec = train_spec(prepared, tmp_path / "ddp", name="ddp-test")  # same global batch 16
    spec_file = tmp_path / "train.json"
    spec_file.write_text(json.dumps(spec))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bertops.trainer.cli",
            "launch",
            "--nproc",
            "2",
            "--threads",
            "1",
            "train",
            "--spec",
            str(spec_file),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    result = lines[-1]
    assert result["succeeded"], result["message"]
    # Only rank 0 reports: one "started" line per epoch, one result.
    assert sum(1 for e in lines if e.get("message") == "epoch 1 started") == 1
    details = result["details"]
    assert details["worldSize"] == 2
    first, second = details["rankWeightDigests"]
    assert first == second  # DDP kept the replicas bit-identical
    assert abs(result["metrics"]["test.accuracy"] - single.metrics["test.accuracy"]) <= 0.1
    assert result["metrics"]["test.accuracy"] > details["majorityBaselineAccuracy"] + 0.15
    single_loss = single.details.history[-1]["trainLoss"]
    assert details["history"][-1]["trainLoss"] == pytest.approx(single_loss, abs=0.1)
    folder = tmp_path / "ddp"
    manifest = ModelManifest.model_validate_json((folder / MODEL_MANIFEST).read_text())
    assert verify_folder(folder, manifest.files) == []
    assert manifest.measurements["worldSize"] == 2


def test_rank_env_follows_the_standard_contract() -> None:
    env = rank_env(1, 4, 29500, base={"PATH": "/bin"})
    assert {
        k: env[k] for k in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK")
    } == {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
        "WORLD_SIZE": "4",
        "RANK": "1",
        "LOCAL_RANK": "1",
    }
    assert int(env["OMP_NUM_THREADS"]) >= 1
