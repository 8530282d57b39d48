"""Scoring: batched prediction over tokenized rows (sharded across ranks when
distributed) and the ``evaluate`` step that scores any model artifact on a prepared split.

:func:`score` is used by train (validation each epoch, test at the end); the ``evaluate``
step (``bertops trainer evaluate``) is used by compression gates and canary analysis;
:func:`open_model` and :class:`LoadedModel` (an artifact's ids for a prepared table, its
predictions) are shared with the ``challenge`` step. The artifact is verified against its
manifest (sha256 of every file) before loading.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bertops.api.artifacts import MODEL_MANIFEST, ModelManifest, sha256_file
from bertops.api.steps import EvaluateDetails, EvaluateStep, StepResult
from bertops.modelio.recipe import load_torch
from bertops.trainer import artifacts_io, models, prepare
from bertops.trainer.distributed import DistContext
from bertops.trainer.errors import BadInputError
from bertops.trainer.metrics import classification_metrics, summary
from bertops.trainer.progress import Progress


def collate(
    rows: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """Pad a batch of id lists to its longest row (dynamic padding, no wasted tokens)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def _forward(
    model: torch.nn.Module,
    ids: Sequence[Sequence[int]],
    labels: Sequence[int] | None,
    *,
    pad_id: int,
    batch_size: int,
    ctx: DistContext,
    amp_dtype: torch.dtype | None = None,
) -> tuple[list[int], list[float]]:
    """Predicted class per row, in row order, and each row's loss (0.0 without labels);
    each rank scores rows rank::world and results are gathered."""
    model.eval()
    mine = list(range(ctx.rank, len(ids), ctx.world_size))
    out: list[tuple[int, int, float]] = []
    # Sorting by length keeps padding small; order does not change the results.
    mine.sort(key=lambda i: len(ids[i]))
    for start in range(0, len(mine), batch_size):
        chunk = mine[start : start + batch_size]
        batch = collate([ids[i] for i in chunk], pad_id, ctx.device)
        with autocast(ctx.device, amp_dtype):
            logits = model(**batch).logits
        if labels is None:
            losses = torch.zeros(len(chunk))
        else:
            target = torch.as_tensor([labels[i] for i in chunk], device=ctx.device)
            losses = torch.nn.functional.cross_entropy(logits.float(), target, reduction="none")
        preds = logits.argmax(dim=-1)
        out.extend(zip(chunk, preds.tolist(), losses.tolist(), strict=True))
    # Gathered as tensors (row index, prediction, loss), never as pickled objects.
    row_ids = torch.tensor([row for row, _, _ in out], dtype=torch.long)
    predicted = torch.tensor([pred for _, pred, _ in out], dtype=torch.long)
    row_losses = torch.tensor([loss for _, _, loss in out], dtype=torch.float64)
    columns = [torch.cat(ctx.all_gather(c)).tolist() for c in (row_ids, predicted, row_losses)]
    merged = sorted(zip(*columns, strict=True))
    return [p for _, p, _ in merged], [l_ for _, _, l_ in merged]


def score(
    model: torch.nn.Module,
    ids: Sequence[Sequence[int]],
    labels: Sequence[int],
    *,
    label_names: list[str],
    pad_id: int,
    batch_size: int,
    ctx: DistContext,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Metrics over all rows (see :func:`_forward` for how ranks share them)."""
    y_pred, losses = _forward(
        model, ids, labels, pad_id=pad_id, batch_size=batch_size, ctx=ctx, amp_dtype=amp_dtype
    )
    loss = sum(losses) / len(losses) if losses else None
    return classification_metrics(labels, y_pred, label_names, loss)


def load_model_artifact(folder: Path) -> ModelManifest:
    """The manifest of a model folder after checking every file's sha256."""
    manifest = artifacts_io.read_verified_manifest(
        folder, MODEL_MANIFEST, ModelManifest, "model artifact"
    )
    if manifest.format != "safetensors":
        raise BadInputError(f"evaluate cannot load format {manifest.format} yet")
    return manifest


@dataclass
class LoadedModel:
    """A verified model artifact ready to score rows: manifest, tokenizer and weights."""

    folder: Path
    manifest: ModelManifest
    tokenizer: Any
    model: Any

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id or 0

    def encode(
        self, frame: pd.DataFrame, tokenizer_info: dict[str, Any] | None, progress: Progress
    ) -> tuple[list[list[int]], bool]:
        """Token ids of a prepared table's rows for this model and whether they were
        re-tokenized: the prepared ids when ``tokenizer_info`` (the dataset manifest's)
        has this model's vocabulary and length, else the text through its tokenizer."""
        same_vocab = (
            tokenizer_info is not None
            and models.vocab_digest(self.tokenizer) == tokenizer_info.get("vocabSha256")
            and tokenizer_info.get("maxLength") == self.manifest.max_length
        )
        if same_vocab:
            return [list(map(int, row)) for row in frame["input_ids"]], False
        # Another vocabulary or length: the prepared ids do not fit this model.
        progress.message(f"re-tokenizing {len(frame)} rows with the model's tokenizer")
        texts = frame["text"].tolist()
        return prepare.tokenize(self.tokenizer, texts, self.manifest.max_length).ids, True

    def predict(self, ids: Sequence[Sequence[int]], batch_size: int, ctx: DistContext) -> list[str]:
        """The predicted label name of each row, in row order."""
        predicted, _ = _forward(
            self.model, ids, None, pad_id=self.pad_id, batch_size=batch_size, ctx=ctx
        )
        return [self.manifest.labels[p] for p in predicted]


def open_model(
    folder: Path, device: torch.device, manifest: ModelManifest | None = None
) -> LoadedModel:
    """Load a model artifact folder onto ``device``, verified (sha256 of every file)
    unless its ``manifest`` was already read with :func:`load_model_artifact`."""
    manifest = manifest or load_model_artifact(folder)
    tokenizer = models.load_tokenizer(folder)
    # The load recipe (e.g. pruneHeads) is replayed exactly as the server does.
    model: Any = load_torch(folder, manifest)
    model.to(device)
    return LoadedModel(folder, manifest, tokenizer, model)


def run_evaluate(step: EvaluateStep, progress: Progress) -> StepResult:
    ctx = DistContext(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    with (
        artifacts_io.local_folder(step.model_uri, "model artifact") as model_dir,
        artifacts_io.local_folder(step.dataset_uri, "prepared dataset") as data_dir,
    ):
        manifest = load_model_artifact(model_dir)
        data_manifest, _ = prepare.load_prepared(data_dir)
        frame = prepare.read_split(data_dir, step.split)
        if frame.empty:
            raise BadInputError(f"split {step.split} of {step.dataset_uri} has no rows")
        unknown = sorted(set(data_manifest.labels) - set(manifest.labels))
        if unknown:
            raise BadInputError(
                f"label(s) {', '.join(map(repr, unknown))} of the dataset are unknown to the "
                f"model (its labels: {', '.join(manifest.labels)})"
            )
        loaded = open_model(model_dir, ctx.device, manifest)
        to_model = {i: manifest.labels.index(name) for i, name in enumerate(data_manifest.labels)}
        labels = [to_model[int(x)] for x in frame["label"]]
        ids, retokenized = loaded.encode(frame, data_manifest.tokenizer, progress)
        progress.emit(
            "start", message=f"scoring {len(ids)} rows of {step.split}", total_steps=len(ids)
        )
        started = time.monotonic()
        metrics = score(
            loaded.model,
            ids,
            labels,
            label_names=manifest.labels,
            pad_id=loaded.pad_id,
            batch_size=step.batch_size,
            ctx=ctx,
        )
        elapsed = time.monotonic() - started
        manifest_sha = sha256_file(model_dir / MODEL_MANIFEST)
    throughput = len(ids) / elapsed if elapsed > 0 else 0.0
    progress.emit("done", samples_per_second=throughput, message="evaluation finished")
    flat = summary(metrics)
    flat["samplesPerSecond"] = throughput
    return StepResult(
        kind="evaluate",
        name=step.name,
        succeeded=True,
        metrics=flat,
        artifacts={"model": step.model_uri, "dataset": step.dataset_uri},
        checksums={"modelManifest": manifest_sha, "dataset": data_manifest.checksum},
        details=EvaluateDetails(
            split=step.split,
            rows=len(ids),
            metrics=metrics,
            model_name=manifest.name,
            retokenized=retokenized,
            labels=manifest.labels,
        ),
    )


def state_digest(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes), in name order:
    equal digests on two ranks mean bit-identical weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        if value.numel():
            digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
