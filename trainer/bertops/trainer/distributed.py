"""torch.distributed under the standard env contract (MASTER_ADDR, MASTER_PORT,
WORLD_SIZE, RANK, LOCAL_RANK): gloo on CPU, nccl on GPU.

Used by :mod:`bertops.trainer.train` (and evaluation inside it). Without WORLD_SIZE (or
with 1) nothing is initialised and every collective is a local no-op, so the training
code is the same for one process or many. The env comes from the local launcher
(:mod:`bertops.trainer.launcher`) or an Indexed Job on Kubernetes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

from bertops.trainer.errors import BadInputError, TransientError


def env_rank() -> int:
    """This process's rank from the env (0 when not distributed); cheap, no torch init."""
    return int(os.environ.get("RANK", "0") or 0)


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    # Only tensor collectives, never all_gather_object/broadcast_object_list: those
    # pickle on the sender and unpickle on every receiver, and a gloo/nccl group is not
    # authenticated, so whoever reaches MASTER_PORT could run code in every rank.
    # A tensor is a dtype, a shape and raw bytes; nothing in it executes.
    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's 1-D tensor (lengths may differ between ranks), on the CPU."""
        if not self.distributed:
            return [tensor.detach().reshape(-1).cpu()]
        local = tensor.detach().reshape(-1).to(self.device)
        size = torch.tensor([local.numel()], dtype=torch.long, device=self.device)
        sizes = [torch.zeros_like(size) for _ in range(self.world_size)]
        dist.all_gather(sizes, size)
        counts = [int(s.item()) for s in sizes]
        padded = torch.zeros(max(counts), dtype=local.dtype, device=self.device)
        padded[: local.numel()] = local
        gathered = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(gathered, padded)
        return [g[:n].cpu() for g, n in zip(gathered, counts, strict=True)]

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on at least one (so all ranks take
        the same branch and none waits forever in a collective the others skipped)."""
        if not self.distributed:
            return flag
        value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def gather_digests(self, digest: str) -> list[str]:
        """A sha256 hex digest from every rank, sent as 32 raw bytes."""
        mine = torch.tensor(list(bytes.fromhex(digest)), dtype=torch.uint8)
        return [bytes(part.tolist()).hex() for part in self.all_gather(mine)]

    def shutdown(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError as error:
        raise BadInputError(f"environment variable {name}={value!r} is not an integer") from error


def from_env(timeout_s: float = 600.0) -> DistContext:
    """Join the process group described by the env (or stay single-process)."""
    world = _int_env("WORLD_SIZE", 1)
    rank = _int_env("RANK", 0)
    local_rank = _int_env("LOCAL_RANK", rank)
    use_cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world <= 1:
        return DistContext(0, 1, 0, device, None)
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise BadInputError(f"WORLD_SIZE={world} but {', '.join(missing)} not set")
    if not 0 <= rank < world:
        raise BadInputError(f"RANK={rank} is outside WORLD_SIZE={world}")
    backend = "nccl" if use_cuda else "gloo"
    try:
        dist.init_process_group(
            backend=backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s)
        )
    except (RuntimeError, ValueError) as error:
        # Peers not reachable yet or gone: the runtime may retry the whole group.
        raise TransientError(f"joining the {backend} process group failed: {error}") from error
    return DistContext(rank, world, local_rank, device, backend)
