"""Writing a compressed variant as a model artifact: its manifest (load recipe,
measurements, lineage linking it to its parent) and the folder itself, published
atomically by the shared writer :func:`bertops.trainer.model_artifact.write`; sizes on
disk are measured on the written folder.

Called by :mod:`bertops.trainer.compress.finish`, only for a variant that passed its
quality gate (a failed gate writes nothing).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, cast

from bertops.api.artifacts import ModelManifest
from bertops.api.model import Lineage
from bertops.api.steps import CompressStep
from bertops.trainer import model_artifact
from bertops.trainer.compress import measure
from bertops.trainer.compress.methods import Variant


def variant_manifest(
    step: CompressStep,
    parent: ModelManifest,
    variant: Variant,
    fmt: str,
    labels: list[str],
    test_metrics: dict[str, Any],
    measurements: dict[str, Any],
) -> ModelManifest:
    """The variant's manifest before writing (``files`` are filled in by the writer);
    ``labels`` is the recipe, ``test_metrics`` the variant's test summary."""
    return ModelManifest(
        name=step.model_name or step.name,
        task=parent.task,
        format=cast(Any, fmt),
        labels=parent.labels,
        max_length=parent.max_length,
        files=[],
        load_recipe=variant.load_recipe,
        metrics={"test": test_metrics},
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


def write_variant(
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
