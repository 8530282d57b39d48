"""The end of a compress step, once the recipe has run: score parent and variant on the
same test rows, gate the variant on quality (:mod:`.gate`), time both when the step asks
(:mod:`.measure`), and either return the failed gate (nothing written) or write the
variant (:mod:`.publish`) and return the step's result.

Called by :mod:`bertops.trainer.compress.pipeline` with the variant that
:func:`bertops.trainer.compress.methods.apply` left.
"""

from __future__ import annotations

from typing import Any, cast

import torch

from bertops.api.artifacts import ModelManifest
from bertops.api.model import REASON_GATE_FAILED
from bertops.api.steps import CompressDetails, CompressStep, ExitCode, StepResult
from bertops.trainer.compress import gate, measure, prune, publish, recipe
from bertops.trainer.compress.methods import Rows, Variant
from bertops.trainer.distributed import DistContext
from bertops.trainer.evaluate import score
from bertops.trainer.metrics import summary
from bertops.trainer.progress import Progress


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


def finish(
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
    """Score, gate, measure and (if the gate passed) write the variant."""
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
        return _gate_failed(step, progress, verdict, details)
    measurements = _measurements(
        step, progress, parent_model, variant, runnable, parameters, details
    )
    measurements["qualityDelta"] = verdict.delta_json()
    manifest = publish.variant_manifest(
        step, parent, variant, fmt, labels, summary(variant_test), measurements
    )
    manifest, manifest_sha = publish.write_variant(
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


def _gate_failed(
    step: CompressStep, progress: Progress, verdict: gate.GateVerdict, details: CompressDetails
) -> StepResult:
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


def _measurements(
    step: CompressStep,
    progress: Progress,
    parent_model: Any,
    variant: Variant,
    runnable: Any,
    parameters: int,
    details: CompressDetails,
) -> dict[str, Any]:
    """What the manifest records of the variant (before the quality delta and the sizes
    on disk): parameters, threads, quantization and export details, and, when the step
    asks, the latency of variant and parent timed together (also set on ``details``)."""
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
    return measurements
