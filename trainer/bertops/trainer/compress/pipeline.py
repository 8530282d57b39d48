"""The ``compress`` step's driver: apply a BertModel's compression recipe to its parent
model artifact, measure the variant against the parent on this machine, gate it on
quality, and write a new model artifact linked to its parent.

Called through :func:`bertops.trainer.compress.run_compress` (CLI: ``bertops trainer
compress --spec FILE``). Order of work: verify the inputs and validate the whole recipe
(cheap, before any weights are loaded; :mod:`.recipe`), run the methods in order
(:mod:`.methods`), then score parent and variant on the test split, gate, time both and
write the artifact atomically (:mod:`.finish`, :mod:`.publish`). A failed gate writes
nothing. Artifact layout (``output_uri``)::

    model.safetensors config.json   format safetensors: FP32 weights (pruned weights are
                                    zeros; pruned heads are absent, see load recipe)
    model.onnx config.json          format onnx: the (possibly INT8) onnxruntime graph
    tokenizer.json tokenizer_config.json labels.json metrics.json
    bertops-model.json              manifest: loadRecipe, measurements, lineage.parentModel
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from typing import Any

from bertops.api.artifacts import MODEL_MANIFEST, ModelManifest
from bertops.api.steps import CompressStep, StepResult
from bertops.modelio.heads import PRUNE_HEADS_OP
from bertops.trainer import artifacts_io, models, prepare
from bertops.trainer.compress import artifact, recipe
from bertops.trainer.compress.finish import finish
from bertops.trainer.compress.methods import Rows, Variant, apply
from bertops.trainer.compress.tuning import DEFAULT as DEFAULT_TUNING
from bertops.trainer.compress.tuning import OnnxTuning
from bertops.trainer.errors import BadInputError
from bertops.trainer.evaluate import load_model_artifact
from bertops.trainer.progress import Progress


def run_compress(
    step: CompressStep, progress: Progress, *, tuning: OnnxTuning | None = None
) -> StepResult:
    with (
        artifacts_io.local_folder(step.parent_uri, "parent model") as parent_dir,
        artifacts_io.local_folder(step.dataset_uri, "prepared dataset") as data_dir,
    ):
        return _compress(step, progress, parent_dir, data_dir, tuning or DEFAULT_TUNING)


def _read_parent(folder: Path) -> tuple[ModelManifest, dict[str, Any]]:
    data = artifacts_io.read_json(folder / MODEL_MANIFEST, "parent model")
    if isinstance(data, dict) and data.get("format", "safetensors") != "safetensors":
        raise BadInputError(
            f"parent model {folder} is a {data['format']} artifact; "
            "compression starts from safetensors weights"
        )
    manifest = load_model_artifact(folder)  # every file's sha256 before anything is read
    config = artifacts_io.read_json(folder / "config.json", "parent model")
    return manifest, config


def _split_rows(
    data_dir: Path,
    split: str,
    parent: ModelManifest,
    data_labels: list[str],
    tokenizer: Any,
    same_vocab: bool,
) -> Rows:
    frame = prepare.read_split(data_dir, split)
    to_model = {i: parent.labels.index(name) for i, name in enumerate(data_labels)}
    if same_vocab:
        ids = [list(map(int, row)) for row in frame["input_ids"]]
    else:
        ids = prepare.tokenize(tokenizer, frame["text"].tolist(), parent.max_length).ids
    return Rows(ids, [to_model[int(x)] for x in frame["label"]])


def _compress(
    step: CompressStep, progress: Progress, parent_dir: Path, data_dir: Path, tuning: OnnxTuning
) -> StepResult:
    parent, config = _read_parent(parent_dir)
    data_manifest, _ = prepare.load_prepared(data_dir)
    ops = recipe.plan(
        step.compression, parent, config, train_rows=int(data_manifest.rows.get("train", 0))
    )
    unknown = sorted(set(data_manifest.labels) - set(parent.labels))
    if unknown:
        raise BadInputError(
            f"label(s) {', '.join(map(repr, unknown))} of the dataset are "
            f"unknown to the parent model (its labels: {parent.labels})"
        )
    if not data_manifest.rows.get("test"):
        raise BadInputError("the dataset's test split is empty: nothing to gate on")
    labels = [op.label for op in ops]
    progress.emit(
        "start", total_steps=len(ops), message=f"compressing {parent.name}: {' -> '.join(labels)}"
    )

    tokenizer = models.load_tokenizer(parent_dir)
    same_vocab = (
        models.vocab_digest(tokenizer) == data_manifest.tokenizer.get("vocabSha256")
        and data_manifest.tokenizer.get("maxLength") == parent.max_length
    )
    rows = {
        split: _split_rows(data_dir, split, parent, data_manifest.labels, tokenizer, same_vocab)
        for split in prepare.SPLITS
    }
    pad_id = int(tokenizer.pad_token_id or 0)
    parent_model = artifact.load_torch(parent_dir, parent)
    hp = parent.lineage.hyperparameters
    variant = Variant(
        copy.deepcopy(parent_model), [s for s in parent.load_recipe if s.op == PRUNE_HEADS_OP]
    )
    with tempfile.TemporaryDirectory(prefix="bertops-compress-") as scratch_name:
        scratch = Path(scratch_name)
        for index, op in enumerate(ops, start=1):
            progress.emit(
                "progress", step=index, total_steps=len(ops), message=f"running {op.label}"
            )
            started = time.monotonic()
            info = apply(op, variant, rows, pad_id, hp, scratch, progress, tuning)
            if op.defaulted:
                info["defaulted"] = list(op.defaulted)
            variant.details.append(
                {"recipe": op.label, "seconds": round(time.monotonic() - started, 2), **info}
            )
        return finish(
            step,
            progress,
            parent,
            parent_model,
            variant,
            rows,
            tokenizer,
            pad_id,
            ops,
            data_manifest.checksum,
        )
