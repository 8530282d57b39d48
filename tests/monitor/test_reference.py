"""The reference step on a tiny model and a tiny prepared dataset: the rows it keeps
(prediction-log lines with the model's embeddings and the descriptors), its seal, its
determinism, its refusals, and that the drift check reads it back."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bertops.api.steps import ReferenceDetails
from bertops.server.monitor.reference import REFERENCE_MANIFEST, load_reference
from bertops.trainer.steps import run_step

HIDDEN = 32  # tests.server.artifacts.tiny_model


def reference_spec(model: Path, data: Path, output: Path, **more: object) -> dict[str, object]:
    return {
        "kind": "reference",
        "name": "ref-test",
        "modelUri": str(model),
        "datasetUri": str(data),
        "outputUri": str(output),
        **more,
    }


def test_reference_rows(tiny_model: Path, prepared: Path, tmp_path: Path) -> None:
    output = tmp_path / "reference"
    result = run_step(reference_spec(tiny_model, prepared, output, size=8, seed=3))
    assert result.succeeded, result.message
    details = result.details
    assert isinstance(details, ReferenceDetails)
    assert (details.rows, details.embedding_dim, details.split) == (8, HIDDEN, "validation")
    assert details.model_name == "tiny-v1"
    assert sum((details.label_counts or {}).values()) == 8
    manifest, rows = load_reference(str(output))
    assert manifest.rows == 8
    assert len(rows) == 8
    for row in rows:
        assert len(row["embedding"]) == HIDDEN
        assert {"chars", "tokens", "unkRate", "nonAscii", "label", "textSha256"} <= set(row)
        assert "text" not in row  # the sample is hashed like a default prediction log
        assert row["model"] == "tiny-v1"
    assert sorted(p.name for p in output.iterdir()) == [REFERENCE_MANIFEST, "reference.jsonl"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    again = tmp_path / "again"
    assert run_step(reference_spec(tiny_model, prepared, again, size=8, seed=3)).succeeded
    _, same = load_reference(str(again))
    key = sorted((r["index"], r["textSha256"]) for r in rows)
    assert key == sorted((r["index"], r["textSha256"]) for r in same)


def test_size_larger_than_the_split_takes_it_all(
    tiny_model: Path, prepared: Path, tmp_path: Path
) -> None:
    result = run_step(reference_spec(tiny_model, prepared, tmp_path / "r", split="test"))
    assert result.succeeded, result.message
    assert isinstance(result.details, ReferenceDetails)
    assert result.details.rows == 15  # 60 texts, 25 % test


@pytest.mark.parametrize("broken", ["model", "dataset", "tampered dataset"])
def test_bad_inputs_are_final(
    tiny_model: Path, prepared: Path, tmp_path: Path, broken: str
) -> None:
    model, data = tiny_model, prepared
    if broken == "model":
        model = tmp_path / "nowhere"
    elif broken == "dataset":
        data = tmp_path / "empty"
        data.mkdir()
    elif broken == "tampered dataset":
        data = tmp_path / "copy"
        shutil.copytree(prepared, data)
        (data / "validation.parquet").write_bytes(b"PAR1 not what was hashed")
    result = run_step(reference_spec(model, data, tmp_path / "reference"))
    assert (result.succeeded, result.exit_code) == (False, 2), result.message
    if broken == "tampered dataset":
        assert "sha256 mismatch for validation.parquet" in result.message
    assert not (tmp_path / "reference").exists()
