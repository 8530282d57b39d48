"""Per-epoch training checkpoints without pickle: weights, optimizer moments and RNG state
as safetensors, scheduler and loop state as JSON.

Written by rank 0 of :mod:`bertops.trainer.train` after each epoch (one folder
``epoch-NNNN`` per epoch, written atomically, older ones removed); read by every rank
when the same run starts again, so a killed run resumes at the next epoch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from bertops.trainer import artifacts_io

STATE_FILE = "state.json"
_EPOCH_DIR = re.compile(r"^epoch-(\d{4,})$")


def epoch_dir(epoch: int) -> str:
    return f"epoch-{epoch:04d}"


def detached(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU copies that own their memory (safetensors refuses shared storage)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


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


def save(uri: str, checkpoint: Checkpoint) -> str:
    """Write ``uri/epoch-NNNN`` atomically and drop older epochs; returns its URI."""
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
        # The loop state is the completeness marker: written last.
        artifacts_io.write_json(folder / STATE_FILE, {"epoch": checkpoint.epoch,
                                                      **checkpoint.state})
    for name in artifacts_io.list_names(uri):
        match = _EPOCH_DIR.match(name)
        if match and int(match.group(1)) < checkpoint.epoch:
            artifacts_io.remove(artifacts_io.join(uri, name))
    return target


def latest_epoch(uri: str) -> int | None:
    epochs = [int(m.group(1)) for name in artifacts_io.list_names(uri)
              if (m := _EPOCH_DIR.match(name))]
    return max(epochs) if epochs else None


def load(uri: str, epoch: int) -> Checkpoint:
    with artifacts_io.local_folder(artifacts_io.join(uri, epoch_dir(epoch)), "checkpoint") as f:
        return _load_folder(f)


def _load_folder(folder: Path) -> Checkpoint:
    state = json.loads((folder / STATE_FILE).read_text())
    best_path = folder / "best.safetensors"
    return Checkpoint(
        epoch=int(state.pop("epoch")),
        state=state,
        model=load_file(str(folder / "model.safetensors")),
        best_model=load_file(str(best_path)) if best_path.is_file() else None,
        optimizer=_unflatten_optimizer(load_file(str(folder / "optimizer.safetensors")),
                                       json.loads((folder / "optimizer.json").read_text())),
        scheduler=json.loads((folder / "scheduler.json").read_text()),
        rng=load_file(str(folder / "rng.safetensors")),
    )
