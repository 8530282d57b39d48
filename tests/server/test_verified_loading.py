"""The server loads exactly what it verified (a file swapped after the check is never
read), and it rebuilds compressed variants with the loader the trainer measures with
(bertops.modelio), without importing the trainer."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bertops.api.artifacts import LoadStep
from bertops.modelio.heads import PRUNE_HEADS_OP, prune_heads
from bertops.server.artifact import ArtifactError
from bertops.server.model import ServedModel
from tests.server.artifacts import tiny_model, tokenizer_source, write_manifest, write_tiny_artifact

TEXTS = ["a short one", "a rather longer text that needs more tokens than the others do"]


def probabilities(model: ServedModel) -> list[float]:
    model.load()
    return [value for p in model.predict(TEXTS) for value in p.probabilities]


def test_weights_swapped_after_verification_are_never_loaded(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    expected = probabilities(ServedModel(str(tiny_artifact), threads=1))
    folder = Path(shutil.copytree(tiny_artifact, tmp_path / "model"))
    other = write_tiny_artifact(tmp_path / "other", seed=1)
    served = ServedModel(str(folder), threads=1)
    verified = served.verify()
    # Between the check and the load, someone replaces the weights in the store.
    shutil.copyfile(other / "model.safetensors", folder / "model.safetensors")
    assert probabilities(served) == pytest.approx(expected, abs=1e-6)
    assert verified.source == folder and not verified.folder.exists()  # copy released


def test_head_pruned_variant_is_rebuilt_by_the_shared_loader(tmp_path: Path) -> None:
    import torch
    from transformers import AutoTokenizer

    folder = tmp_path / "pruned"
    model = tiny_model(seed=2)
    prune_heads(model, {0: [1]})
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source())
    tokenizer.save_pretrained(folder)
    write_manifest(
        folder,
        "tiny-pruned",
        recipe=[LoadStep(op=PRUNE_HEADS_OP, params={"heads": model.config.pruned_heads})],
    )
    with torch.inference_mode():
        encoded = tokenizer(TEXTS, padding=True, truncation=True, return_tensors="pt")
        reference = torch.softmax(model(**encoded).logits, dim=-1).flatten().tolist()
    assert probabilities(ServedModel(str(folder), threads=1)) == pytest.approx(reference, abs=1e-5)


def test_impossible_head_recipe_is_refused(tmp_path: Path) -> None:
    folder = write_tiny_artifact(tmp_path / "odd")
    write_manifest(
        folder, "odd", recipe=[LoadStep(op=PRUNE_HEADS_OP, params={"heads": {"0": [0, 1]}})]
    )
    with pytest.raises(ArtifactError, match="cannot rebuild the head-pruned model"):
        ServedModel(str(folder), threads=1).load()


def test_the_server_does_not_import_the_trainer() -> None:
    code = (
        "import sys, bertops.server.app, bertops.server.model, bertops.modelio.recipe; "
        "print([m for m in sys.modules if m.startswith('bertops.trainer')])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"
