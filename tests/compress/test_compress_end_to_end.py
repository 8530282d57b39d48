"""The compress step as a whole: the quality gate refuses a destroyed model and leaves no
artifact, the entry point runs as a separate process, and the model server serves the
variants the way the trainer scored them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bertops.api.model import REASON_GATE_FAILED
from tests.compress.conftest import compress_spec, manifest_of


def test_gate_rejects_a_destroyed_model_and_leaves_no_artifact(compress: Any) -> None:
    result, output = compress(
        [{"method": "magnitudePrune", "sparsity": 0.99}],
        gate={"maxAccuracyDrop": 0.01, "maxF1Drop": 0.01},
    )
    assert not result.succeeded
    assert result.exit_code == 2
    assert result.reason == REASON_GATE_FAILED
    assert "dropped" in result.message and "->" in result.message
    assert (
        result.details.quality_delta["macroF1"] < -0.01
        or result.details.quality_delta["accuracy"] < -0.01
    )
    assert not output.exists()
    assert not any(p.name.startswith(f".{output.name}") for p in output.parent.iterdir())


@pytest.mark.slow
def test_subprocess_runs_a_compress_step(
    trained: tuple[Path, Any], prepared: Path, tmp_path: Path
) -> None:
    """The entry point as a separate process (how a runtime starts it)."""
    import subprocess
    import sys

    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            compress_spec(
                trained[0],
                prepared,
                tmp_path / "out",
                [{"method": "magnitudePrune", "sparsity": 0.3}],
            )
        )
    )
    code = (
        "import sys, json; from bertops.api.steps import CompressStep; "
        "from bertops.trainer.compress import run_compress; "
        "from bertops.trainer.progress import Progress; "
        f"r = run_compress(CompressStep.model_validate_json(open({str(spec)!r}).read()), "
        "Progress(bar=False)); print(r.model_dump_json(by_alias=True)); "
        "sys.exit(r.exit_code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["kind"] == "compress" and result["artifacts"]["model"] == str(tmp_path / "out")
    events = [json.loads(line)["event"] for line in done.stdout.strip().splitlines()[:-1]]
    assert events[0] == "start" and events[-1] == "done"


def test_model_server_serves_compressed_variants_like_the_trainer_scores_them(
    compress: Any, tmp_path: Path
) -> None:
    """Across components: the server rebuilds a head-pruned model and applies an INT8
    load step, and its answers match what compress measured with the trainer's loader."""
    import torch

    from bertops.server.model import ServedModel, TorchClassifier
    from bertops.trainer.compress.artifact import load_torch

    texts = ["i love this so much", "worst day ever, everything broke", "the bus is at 5pm"]
    for steps in (
        [{"method": "headPrune", "headsToPrune": 2}],
        [{"method": "quantize", "backend": "torch", "granularity": "perChannel"}],
    ):
        result, output = compress(steps)
        assert result.succeeded, result.message
        served = ServedModel(str(output), threads=1)
        served.load()
        answers = served.predict(texts)
        reference = load_torch(output, manifest_of(output))
        assert isinstance(served.classifier, TorchClassifier)
        tokenizer_out = served.classifier.tokenizer(
            texts, padding=True, truncation=True, return_tensors="pt"
        )
        with torch.inference_mode():
            expected = torch.softmax(reference(**tokenizer_out).logits, dim=-1)
        labels = manifest_of(output).labels
        assert [a.label for a in answers] == [labels[i] for i in expected.argmax(-1).tolist()]
