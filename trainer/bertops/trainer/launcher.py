"""Local launcher: run N ranks of a trainer command as processes on loopback with the
standard torch.distributed env (MASTER_ADDR/PORT, WORLD_SIZE, RANK, LOCAL_RANK).

Used by ``bertops trainer launch --nproc N train --spec FILE``, by the operator's local
runtime and by tests. It is the single-machine counterpart of an Indexed Job with a
headless Service: every rank runs ``python -m bertops.trainer.cli ...`` unchanged.
If one rank fails the others are stopped and its exit code is returned.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rank_env(
    rank: int,
    world_size: int,
    port: int,
    base: Mapping[str, str] | None = None,
    threads: int | None = None,
) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "WORLD_SIZE": str(world_size),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
        }
    )
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    elif "OMP_NUM_THREADS" not in env:
        # N ranks share the cores: oversubscribing them makes gloo runs crawl.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // world_size))
    return env


def launch(
    args: Sequence[str],
    nproc: int,
    *,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    threads: int | None = None,
    poll_s: float = 0.2,
) -> int:
    """Run ``python -m bertops.trainer.cli *args`` as ``nproc`` ranks; first failure wins.

    Rank 0 inherits stdout (progress JSON lines and the final result line); the other
    ranks' stdout is discarded (they report nothing there); stderr of all ranks passes
    through for diagnostics.
    """
    port = port or free_port()
    command = [sys.executable, "-m", "bertops.trainer.cli", *args]
    procs: list[subprocess.Popen[bytes]] = []
    for rank in range(nproc):
        procs.append(
            subprocess.Popen(
                command,
                env=rank_env(rank, nproc, port, env, threads),
                stdout=None if rank == 0 else subprocess.DEVNULL,
            )
        )
    exit_code = 0
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [c for c in codes if c not in (None, 0)]
            if failed:
                exit_code = failed[0] or 1
                break
            if all(c == 0 for c in codes):
                break
            time.sleep(poll_s)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    # A rank killed by a signal reports -N; keep exit codes in 0..255 for shells.
    return exit_code if exit_code >= 0 else 128 - exit_code
