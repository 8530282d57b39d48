"""Per-epoch training checkpoints without pickle (weights, optimizer moments and RNG state
as safetensors; scheduler and loop state as JSON), each sealed by a sha256 manifest, and
the resume logic that only trusts a checkpoint whose manifest verifies.

Written by rank 0 of :mod:`bertops.trainer.train` after each epoch (one folder
``epoch-NNNN`` per epoch, published atomically, its manifest written last); read by every
rank when the same run starts again (:func:`resume`), so a killed run resumes at the next
epoch. The previous epoch's checkpoint is kept until a newer one is complete, and one
more besides, so a corrupted or torn newest checkpoint falls back to the one before it
(or to a fresh start, said in the progress log) instead of failing the step.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from bertops.api.artifacts import (
    CHECKPOINT_MANIFEST,
    ArtifactError,
    CheckpointManifest,
    digest_folder,
    verify_manifest,
)
from bertops.trainer import artifacts_io
from bertops.trainer.errors import StepError

STATE_FILE = "state.json"
KEEP = 2  # the newest checkpoint and the one before it (the fallback when it is corrupt)
_EPOCH_DIR = re.compile(r"^epoch-(\d{4,})$")


def epoch_dir(epoch: int) -> str:
    return f"epoch-{epoch:04d}"


def detached(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU copies that own their memory (safetensors refuses shared storage)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def rng_state() -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda.{i}"] = s
    return state


def restore_rng(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available():
        cuda = [state[k] for k in sorted(state) if k.startswith("cuda.")]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


@dataclass
class LoopState:
    epoch: int = 0  # last finished epoch
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    resumed_from: int | None = None
    train_seconds: float = 0.0
    train_cpu_seconds: float = 0.0  # process CPU time: throughput robust to busy machines
    train_samples: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "globalStep": self.global_step,
            "history": self.history,
            "bestValue": self.best_value,
            "bestEpoch": self.best_epoch,
            "badEpochs": self.bad_epochs,
            "trainSeconds": self.train_seconds,
            "trainCpuSeconds": self.train_cpu_seconds,
            "trainSamples": self.train_samples,
        }

    @classmethod
    def from_json(cls, epoch: int, data: dict[str, Any]) -> LoopState:
        return cls(
            epoch=epoch,
            global_step=data["globalStep"],
            history=data["history"],
            best_value=data["bestValue"],
            best_epoch=data["bestEpoch"],
            bad_epochs=data["badEpochs"],
            resumed_from=epoch,
            train_seconds=data.get("trainSeconds", 0.0),
            train_cpu_seconds=data.get("trainCpuSeconds", 0.0),
            train_samples=data.get("trainSamples", 0),
        )


@dataclass
class Checkpoint:
    epoch: int
    state: dict[str, Any]  # loop state: global step, history, best metric, fingerprint
    model: dict[str, torch.Tensor]
    best_model: dict[str, torch.Tensor] | None
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, torch.Tensor]


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, per_param in state["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    per_param: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        per_param.setdefault(int(index), {})[key] = value
    for index, values in meta.get("scalars", {}).items():
        per_param.setdefault(int(index), {}).update(values)
    return {"state": per_param, "param_groups": meta["param_groups"]}


def _epochs(uri: str) -> list[int]:
    return sorted(
        int(m.group(1)) for name in artifacts_io.list_names(uri) if (m := _EPOCH_DIR.match(name))
    )


def save(uri: str, checkpoint: Checkpoint) -> str:
    """Write ``uri/epoch-NNNN`` atomically, sealed by its manifest; returns its URI.

    Only once it is complete are older checkpoints dropped, keeping the one before it;
    checkpoints of later epochs (an abandoned, corrupt timeline) are dropped too, so the
    next resume cannot prefer them."""
    target = artifacts_io.join(uri, epoch_dir(checkpoint.epoch))
    with artifacts_io.staged_folder(target) as folder:
        save_file(checkpoint.model, str(folder / "model.safetensors"))
        if checkpoint.best_model is not None:
            save_file(checkpoint.best_model, str(folder / "best.safetensors"))
        opt_tensors, opt_meta = _flatten_optimizer(checkpoint.optimizer)
        save_file(opt_tensors, str(folder / "optimizer.safetensors"))
        artifacts_io.write_json(folder / "optimizer.json", opt_meta)
        artifacts_io.write_json(folder / "scheduler.json", checkpoint.scheduler)
        save_file(checkpoint.rng, str(folder / "rng.safetensors"))
        artifacts_io.write_json(
            folder / STATE_FILE, {"epoch": checkpoint.epoch, **checkpoint.state}
        )
        # The manifest is the completeness marker and the checksums: written last.
        manifest = CheckpointManifest(epoch=checkpoint.epoch, files=digest_folder(folder))
        (folder / CHECKPOINT_MANIFEST).write_text(manifest.model_dump_json(by_alias=True))
    for epoch in _epochs(uri):
        if epoch < checkpoint.epoch - (KEEP - 1) or epoch > checkpoint.epoch:
            artifacts_io.remove(artifacts_io.join(uri, epoch_dir(epoch)))
    return target


def load(uri: str, epoch: int) -> Checkpoint:
    """One checkpoint, after its manifest verified (ArtifactError when it does not)."""
    with artifacts_io.local_folder(artifacts_io.join(uri, epoch_dir(epoch)), "checkpoint") as f:
        verify_manifest(f, CheckpointManifest, CHECKPOINT_MANIFEST, what="checkpoint")
        return _load_folder(f)


def _load_folder(folder: Path) -> Checkpoint:
    state = json.loads((folder / STATE_FILE).read_text())
    best_path = folder / "best.safetensors"
    return Checkpoint(
        epoch=int(state.pop("epoch")),
        state=state,
        model=load_file(str(folder / "model.safetensors")),
        best_model=load_file(str(best_path)) if best_path.is_file() else None,
        optimizer=_unflatten_optimizer(
            load_file(str(folder / "optimizer.safetensors")),
            json.loads((folder / "optimizer.json").read_text()),
        ),
        scheduler=json.loads((folder / "scheduler.json").read_text()),
        rng=load_file(str(folder / "rng.safetensors")),
    )


def resume(uri: str, fingerprint: str, say: Callable[[str], None]) -> Checkpoint | None:
    """The newest checkpoint of this run that verifies, trying older ones when the newest
    is corrupt, torn or unreadable; None means a fresh start (``say`` tells why)."""
    epochs = _epochs(uri)
    for epoch in reversed(epochs):
        try:
            checkpoint = load(uri, epoch)
        except (ArtifactError, StepError, SafetensorError, OSError, ValueError, KeyError) as error:
            say(f"checkpoint of epoch {epoch} is unusable ({error}); trying an older one")
            continue
        if checkpoint.state.get("fingerprint") != fingerprint:
            say("checkpoints in the store belong to another run; starting fresh")
            return None
        return checkpoint
    if epochs:
        say("no checkpoint in the store verifies; starting fresh")
    return None
