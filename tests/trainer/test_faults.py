"""Training faults: a NaN or infinite loss stops the step with exit code 2 and the
hyper-parameters named, before such an epoch can be checkpointed, kept as best or
written as a model; and ranks exchange only tensors, never pickled objects."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from bertops.api.steps import ExitCode
from bertops.api.training import Hyperparameters
from bertops.trainer import optim, run_step
from bertops.trainer.distributed import DistContext
from bertops.trainer.errors import BadInputError
from tests.trainer.conftest import train_spec

REPO = Path(__file__).resolve().parents[2]


def test_nan_loss_stops_the_step_and_keeps_nothing(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = torch.nn.functional.cross_entropy
    calls = {"n": 0}

    def poisoned(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", poisoned)
    output = tmp_path / "model"
    result = run_step(train_spec(prepared, output, name="diverges", epochs=2))
    assert not result.succeeded
    assert result.exit_code == ExitCode.BAD_INPUT and result.reason == "InvalidInput"
    assert "training diverged: the training loss is nan" in result.message
    assert "learningRate=0.001" in result.message and "maxGradNorm=1.0" in result.message
    assert not output.exists()
    assert not (tmp_path / "model.ckpt").exists()  # no NaN epoch to resume from


@pytest.mark.parametrize("value", [float("nan"), float("inf"), torch.tensor(float("-inf"))])
def test_the_guard_refuses_non_finite_values(value: Any) -> None:
    with pytest.raises(
        BadInputError,
        match=r"validation loss is (nan|inf|-inf) by epoch 2, "
        r"step 7.*learningRate=5e-05.*seed=42",
    ) as error:
        optim.ensure_finite(
            value, DistContext(), Hyperparameters(), what="validation loss", epoch=2, step=7
        )
    assert error.value.exit_code == ExitCode.BAD_INPUT


def test_the_guard_lets_finite_values_through() -> None:
    optim.ensure_finite(
        torch.tensor(0.5), DistContext(), Hyperparameters(), what="loss", epoch=1, step=1
    )


def test_no_rank_exchanges_pickled_objects() -> None:
    """all_gather_object & co. unpickle what a peer sends over an unauthenticated group."""
    pattern = re.compile(
        r"\b(all_gather_object|gather_object|broadcast_object_list|"
        r"scatter_object_list|send_object_list|recv_object_list)\b"
    )
    sources = [
        p for folder in ("trainer", "server", "modelio") for p in (REPO / folder).rglob("*.py")
    ]
    assert sources
    offenders = [
        str(p.relative_to(REPO))
        for p in sources
        if any(
            pattern.search(line) and not line.lstrip().startswith("#")
            for line in p.read_text().splitlines()
        )
    ]
    assert offenders == []


RANK_SCRIPT = """
import json, sys, torch
from bertops.trainer.distributed import from_env
ctx = from_env(timeout_s=60)
rank = ctx.rank
parts = ctx.all_gather(torch.arange(rank + 2, dtype=torch.long) * (rank + 1))
digests = ctx.gather_digests(("%02x" % (rank + 1)) * 32)
flag = ctx.any_rank(rank == 1)
print(json.dumps({"parts": [p.tolist() for p in parts], "digests": digests, "any": flag}))
ctx.shutdown()
"""


@pytest.mark.slow
def test_two_gloo_ranks_gather_tensors_of_different_lengths() -> None:
    from bertops.trainer.launcher import free_port, rank_env

    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RANK_SCRIPT],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=rank_env(rank, 2, port, threads=1),
        )
        for rank in range(2)
    ]
    outputs = [json.loads(p.communicate(timeout=180)[0].strip().splitlines()[-1]) for p in procs]
    for output in outputs:
        assert output["parts"] == [[0, 1], [0, 2, 4]]
        assert output["digests"] == ["01" * 32, "02" * 32]
        assert output["any"] is True
