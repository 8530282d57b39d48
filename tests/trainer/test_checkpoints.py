"""Checkpoint recovery: each checkpoint is sealed by a sha256 manifest, the one before
the newest is kept, and resume falls back past a corrupted or torn checkpoint to the
previous one (or to a fresh start, said in the log) instead of failing the step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bertops.trainer import checkpoints
from bertops.trainer.checkpoints import Checkpoint, LoopState

RUN = "run-fingerprint"


def checkpoint(epoch: int) -> Checkpoint:
    torch.manual_seed(epoch)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    loop = LoopState(epoch=epoch, global_step=10 * epoch, history=[{"epoch": epoch}])
    return Checkpoint(
        epoch=epoch,
        state={"fingerprint": RUN, **loop.to_json()},
        model=checkpoints.detached(model.state_dict()),
        best_model=None,
        optimizer=optimizer.state_dict(),
        scheduler={"last_epoch": epoch},
        rng=checkpoints.rng_state(),
    )


@pytest.fixture
def store(tmp_path: Path) -> Path:
    uri = tmp_path / "ckpt"
    for epoch in (1, 2, 3):
        checkpoints.save(str(uri), checkpoint(epoch))
    return uri


def resume(store: Path) -> tuple[Checkpoint | None, list[str]]:
    said: list[str] = []
    return checkpoints.resume(str(store), RUN, said.append), said


def test_the_previous_checkpoint_is_kept(store: Path) -> None:
    assert sorted(p.name for p in store.iterdir()) == ["epoch-0002", "epoch-0003"]
    found, said = resume(store)
    assert found is not None and found.epoch == 3 and said == []
    assert torch.equal(found.model["weight"], checkpoint(3).model["weight"])


def test_corrupted_newest_checkpoint_falls_back_to_the_previous(store: Path) -> None:
    weights = store / "epoch-0003" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes: only a checksum notices
    weights.write_bytes(bytes(data))
    found, said = resume(store)
    assert found is not None and found.epoch == 2
    assert "epoch 3 is unusable" in said[0] and "sha256 mismatch" in said[0]


def test_torn_checkpoint_with_a_missing_file_falls_back(store: Path) -> None:
    (store / "epoch-0003" / "state.json").unlink()
    found, _ = resume(store)
    assert found is not None and found.epoch == 2  # not an InvalidInput failure


def test_nothing_verifies_means_a_logged_fresh_start(store: Path) -> None:
    for folder in store.iterdir():
        (folder / "rng.safetensors").write_bytes(b"garbage")
    found, said = resume(store)
    assert found is None and said[-1] == "no checkpoint in the store verifies; starting fresh"


def test_saving_after_a_fallback_drops_the_abandoned_later_epochs(store: Path) -> None:
    checkpoints.save(str(store), checkpoint(2))  # epoch 3 was corrupt: epoch 2 again
    assert sorted(p.name for p in store.iterdir()) == ["epoch-0002"]
    found, _ = resume(store)
    assert found is not None and found.epoch == 2


def test_another_runs_checkpoints_are_not_resumed(store: Path) -> None:
    said: list[str] = []
    assert checkpoints.resume(str(store), "another-run", said.append) is None
    assert "belong to another run" in said[0]
