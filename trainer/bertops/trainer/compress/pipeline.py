"""The ``compress`` step: apply a BertModel's compression recipe to its parent model
artifact, measure the variant against the parent on this machine, gate it on quality,
and write a new model artifact linked to its parent.

Called through :func:`bertops.trainer.compress.run_compress` (CLI: ``bertops trainer
compress --spec FILE``). Order of work: verify the inputs and validate the whole recipe
(cheap, before any weights are loaded), run the methods in order, score parent and
variant on the test split, gate, time both, then write the artifact atomically. A failed
gate writes nothing. Artifact layout (``output_uri``)::

    model.safetensors config.json   format safetensors: FP32 weights (pruned weights are
                                    zeros; pruned heads are absent, see load recipe)
    model.onnx config.json          format onnx: the (possibly INT8) onnxruntime graph
    tokenizer.json tokenizer_config.json labels.json metrics.json
    bertops-model.json              manifest: loadRecipe, measurements, lineage.parentModel
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import torch

from bertops.api.artifacts import MODEL_MANIFEST, LoadStep, ModelManifest
from bertops.api.model import REASON_GATE_FAILED, Lineage
from bertops.api.steps import CompressDetails, CompressStep, ExitCode, StepResult
from bertops.modelio.heads import PRUNE_HEADS_OP, prune_heads
from bertops.modelio.recipe import torch_dynamic, torch_load_step
from bertops.trainer import artifacts_io, model_artifact, models, prepare
from bertops.trainer.compress import (
    artifact,
    distill,
    finetune,
    gate,
    measure,
    onnx_export,
    prune,
    quantize,
    recipe,
)
from bertops.trainer.compress.tuning import DEFAULT as DEFAULT_TUNING
from bertops.trainer.compress.tuning import OnnxTuning
from bertops.trainer.distributed import DistContext
from bertops.trainer.errors import BadInputError
from bertops.trainer.evaluate import collate, load_model_artifact, score
from bertops.trainer.metrics import summary
from bertops.trainer.progress import Progress

IMPORTANCE_ROWS = 512  # validation rows that rank attention heads (enough to be stable)


class Rows:
    """Token ids and model-space labels of one split."""

    def __init__(self, ids: list[list[int]], labels: list[int]) -> None:
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.ids)


class Variant:
    """The model as the recipe transforms it."""

    def __init__(self, model: Any, load_recipe: list[LoadStep]) -> None:
        self.model = model  # FP32 torch model (what a safetensors artifact stores)
        self.quantized: Any = None  # torch dynamic-INT8 copy (measured, not stored)
        self.onnx: Path | None = None
        self.onnx_raw: Path | None = None  # the plain export (before offline fusion)
        self.load_recipe = load_recipe
        self.details: list[dict[str, Any]] = []
        self.quantization: dict[str, Any] = {}
        self.export: dict[str, Any] = {}

    def runnable(self) -> Any:
        if self.onnx is not None:
            return artifact.OnnxClassifierModule(self.onnx)
        return self.quantized if self.quantized is not None else self.model


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
            info = _apply(op, variant, rows, pad_id, hp, scratch, progress, tuning)
            if op.defaulted:
                info["defaulted"] = list(op.defaulted)
            variant.details.append(
                {"recipe": op.label, "seconds": round(time.monotonic() - started, 2), **info}
            )
        return _finish(
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


def _apply(
    op: recipe.Operation,
    variant: Variant,
    rows: dict[str, Rows],
    pad_id: int,
    hp: dict[str, str] | None,
    scratch: Path,
    progress: Progress,
    tuning: OnnxTuning,
) -> dict[str, Any]:
    step = op.step
    model = variant.model
    info: dict[str, Any] = {}
    if op.method == "magnitudePrune":
        assert step.sparsity is not None and step.scope is not None
        masks = prune.magnitude_prune(model, step.sparsity, step.scope)
        if step.fine_tune_epochs:
            info["fineTune"] = finetune.train(
                model,
                rows["train"].ids,
                rows["train"].labels,
                finetune.TuneSettings.from_hyperparameters(step.fine_tune_epochs, hp),
                pad_id=pad_id,
                progress=progress,
                what=op.label,
                after_step=lambda: prune.apply_masks(model, masks),
            )
        info["sparsity"] = round(prune.encoder_sparsity(model), 6)
    elif op.method == "headPrune":
        assert step.heads_to_prune is not None
        source = rows["validation"] if len(rows["validation"]) else rows["train"]
        count = min(len(source), IMPORTANCE_ROWS)
        batches = [
            (
                collate(source.ids[i : i + 32], pad_id, torch.device("cpu")),
                torch.as_tensor(source.labels[i : i + 32]),
            )
            for i in range(0, count, 32)
        ]
        importance = prune.head_importance(model, batches)
        heads = prune.choose_heads(importance, step.heads_to_prune, prune.heads_per_layer(model))
        prune_heads(model, heads)
        if step.fine_tune_epochs:
            info["fineTune"] = finetune.train(
                model,
                rows["train"].ids,
                rows["train"].labels,
                finetune.TuneSettings.from_hyperparameters(step.fine_tune_epochs, hp),
                pad_id=pad_id,
                progress=progress,
                what=op.label,
            )
        variant.load_recipe = [s for s in variant.load_recipe if s.op != PRUNE_HEADS_OP]
        variant.load_recipe.insert(
            0, LoadStep(op=PRUNE_HEADS_OP, params={"heads": model.config.pruned_heads})
        )
        info.update(
            removedHeads={str(k): v for k, v in heads.items()},
            headsPerLayer=prune.heads_per_layer(model),
            importanceRows=count,
        )
    elif op.method == "distill":
        assert step.student_layers is not None and step.temperature is not None
        assert step.alpha is not None
        soft = distill.teacher_logits(model, rows["train"].ids, pad_id)
        student = distill.make_student(model, step.student_layers)
        info["teacherLayers"] = distill.student_layer_ids(
            model.config.num_hidden_layers, step.student_layers
        )
        info["training"] = finetune.train(
            student,
            rows["train"].ids,
            rows["train"].labels,
            finetune.TuneSettings.from_hyperparameters(step.fine_tune_epochs, hp),
            pad_id=pad_id,
            progress=progress,
            what=op.label,
            teacher_logits=soft,
            temperature=step.temperature,
            alpha=step.alpha,
        )
        variant.model = student
    elif op.method == "onnxExport":
        sample_rows = (rows["validation"] if len(rows["validation"]) else rows["train"]).ids[:8]
        sample = collate(sample_rows or [[0, 1]], pad_id, torch.device("cpu"))
        uniform = not any(s.op == PRUNE_HEADS_OP for s in variant.load_recipe)
        variant.onnx, info = onnx_export.export_checked(model, scratch, sample, uniform, tuning)
        variant.onnx_raw = scratch / "raw.onnx"
        variant.export = info
    elif op.method == "quantize":
        info = _quantize(op, variant, scratch, tuning)
    return info


def _quantize(
    op: recipe.Operation, variant: Variant, scratch: Path, tuning: OnnxTuning
) -> dict[str, Any]:
    step = op.step
    model = variant.model
    info: dict[str, Any]
    assert step.granularity is not None and step.backend is not None
    if step.backend == "torch":
        variant.quantized = torch_dynamic(model, step.granularity)
        variant.load_recipe.append(torch_load_step(step.granularity))
        info = {
            "backend": "torch",
            "kernels": "torch.ao.quantization dynamic (fbgemm/x86)",
            "granularity": step.granularity,
            "weightType": "qint8",
            "storedAs": "FP32 safetensors + quantizeDynamic load step",
            "quantizedLinears": quantize.quantized_linear_count(variant.quantized),
        }
    else:
        assert variant.onnx is not None  # the plan put an onnxExport before
        raw = tuning.int8_graph == "raw" and variant.onnx_raw is not None
        source = variant.onnx_raw if raw else variant.onnx
        assert source is not None
        target = scratch / "int8.onnx"
        info = quantize.onnx_dynamic(source, target, step.granularity, tuning)
        info["graph"] = "raw export" if raw or source == variant.onnx_raw else "fused"
        variant.onnx = target
    info["choice"] = (
        "default: onnxruntime measured fastest and smallest here "
        "(torch.ao dynamic is slower at batch 1; torchao slower than FP32)"
        if "backend" in op.defaulted
        else "requested by the recipe"
    )
    variant.quantization = info
    return info


def _score(model: Any, split: Rows, names: list[str], pad_id: int) -> dict[str, Any]:
    return score(
        cast(torch.nn.Module, model),
        split.ids,
        split.labels,
        label_names=names,
        pad_id=pad_id,
        batch_size=64,
        ctx=DistContext(),
    )


def _finish(
    step: CompressStep,
    progress: Progress,
    parent: ModelManifest,
    parent_model: Any,
    variant: Variant,
    rows: dict[str, Rows],
    tokenizer: Any,
    pad_id: int,
    ops: list[recipe.Operation],
    dataset_checksum: str,
) -> StepResult:
    labels = [op.label for op in ops]
    fmt = recipe.final_format(ops)
    progress.message(f"scoring parent and variant on {len(rows['test'])} test rows")
    runnable = variant.runnable()
    parent_test = _score(parent_model, rows["test"], parent.labels, pad_id)
    variant_test = _score(runnable, rows["test"], parent.labels, pad_id)
    verdict = gate.check(parent_test, variant_test, step.compression.gate)
    parameters = prune.parameter_count(variant.model)
    details = CompressDetails(
        quality_delta=verdict.delta_json(),
        test_metrics=summary(variant_test),
        parent_test_metrics=summary(parent_test),
        recipe=labels,
        parameters=parameters,
        parent_parameters=prune.parameter_count(parent_model),
        format=fmt,
        steps=variant.details,
        parent_model=parent.name,
    )
    if not verdict.passed:
        progress.emit("error", message=f"quality gate failed: {verdict.message}")
        return StepResult(
            kind="compress",
            name=step.name,
            succeeded=False,
            exit_code=int(ExitCode.BAD_INPUT),
            reason=REASON_GATE_FAILED,
            message=verdict.message,
            details=details,
        )
    measurements: dict[str, Any] = {"parameters": parameters, "threads": torch.get_num_threads()}
    if variant.quantization:
        measurements["quantization"] = variant.quantization
    if variant.export:
        measurements["onnxExport"] = variant.export
    if step.measure_latency:
        progress.message("timing parent and variant (batch 1 and 32, sequence 128)")
        vocab = int(parent_model.config.vocab_size)
        length = min(measure.SEQUENCE_LENGTH, int(parent_model.config.max_position_embeddings))
        timed = measure.latency(
            {
                "parent": measure.torch_forward(parent_model),
                "variant": measure.torch_forward(runnable)
                if variant.onnx is None
                else measure.onnx_forward(variant.onnx),
            },
            vocab,
            length=length,
        )
        measurements["latencySequenceLength"] = length
        details.latency = measurements["latency"] = measure.latency_json(timed["variant"])
        measurements["parentLatency"] = measure.latency_json(timed["parent"])
        measurements["latencyRatio"] = measure.ratios(timed["variant"], timed["parent"])
    measurements["qualityDelta"] = verdict.delta_json()
    manifest = ModelManifest(
        name=step.model_name or step.name,
        task=parent.task,
        format=cast(Any, fmt),
        labels=parent.labels,
        max_length=parent.max_length,
        files=[],
        load_recipe=variant.load_recipe,
        metrics={"test": summary(variant_test)},
        measurements=measurements,
        lineage=Lineage(
            dataset=parent.lineage.dataset,
            dataset_checksum=parent.lineage.dataset_checksum,
            training_run=parent.lineage.training_run,
            base_model=parent.lineage.base_model,
            hyperparameters=parent.lineage.hyperparameters,
            parent_model=parent.name,
            recipe=labels,
            code_version=model_artifact.code_version(),
        ),
    )
    manifest, manifest_sha = _write_variant(
        step,
        manifest,
        variant,
        tokenizer,
        {"test": variant_test, "parentTest": parent_test, "compression": variant.details},
        parent_bytes=sum(f.bytes for f in parent.files),
        dataset_checksum=dataset_checksum,
    )
    name, measurements = manifest.name, manifest.measurements
    details.bytes_on_disk = measurements["bytesOnDisk"]
    details.size_ratio = measurements["sizeRatio"]
    details.quantization = variant.quantization or None
    details.model_name = name
    progress.emit("done", message=f"{name}: {' -> '.join(labels)}; {verdict.message}")
    metrics = {f"test.{k}": v for k, v in summary(variant_test).items()}
    return StepResult(
        kind="compress",
        name=step.name,
        succeeded=True,
        message=verdict.message,
        metrics=metrics,
        artifacts={"model": step.output_uri},
        checksums={"modelManifest": manifest_sha, "dataset": dataset_checksum},
        details=details,
    )


def _write_variant(
    step: CompressStep,
    manifest: ModelManifest,
    variant: Variant,
    tokenizer: Any,
    metrics: dict[str, Any],
    *,
    parent_bytes: int,
    dataset_checksum: str,
) -> tuple[ModelManifest, str]:
    """Publish the variant with the shared model-artifact writer; sizes are measured on
    the written folder."""
    onnx = manifest.format == "onnx"

    def save_weights(folder: Path) -> None:
        if onnx:
            assert variant.onnx is not None
            shutil.copyfile(variant.onnx, folder / "model.onnx")
            variant.model.config.save_pretrained(str(folder))  # label names, shapes
        else:
            variant.model.save_pretrained(str(folder))

    def sizes(folder: Path) -> dict[str, Any]:
        weights = folder / ("model.onnx" if onnx else "model.safetensors")
        on_disk = measure.folder_bytes(folder)
        return {
            "bytesOnDisk": on_disk,
            "weightsBytes": weights.stat().st_size,
            "parentBytesOnDisk": parent_bytes,
            "sizeRatio": round(on_disk / parent_bytes, 4),
            "step": step.name,
            "datasetChecksum": dataset_checksum,
        }

    return model_artifact.write(
        step.output_uri,
        manifest,
        save_weights=save_weights,
        tokenizer=tokenizer,
        metrics=metrics,
        measure=sizes,
    )
