"""Go module builds shared by the cached tool builds: run a `go` command with the build
environment and progress lines, look up a published module's download info, and compile
packages of a wrapper module.

Called by :mod:`bertops.cluster.controlplane.build` (kube-apiserver, etcd),
:mod:`bertops.cluster.argo_workflows.build` and :mod:`bertops.cluster.argocd.build`.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Progress = Callable[[str], None]


def go_env(toolchain: str | None = None) -> dict[str, str]:
    """Static binaries, and go.mod edits allowed (wrapper modules are tidied here)."""
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod")
    if toolchain:
        # A module whose `go` line is newer than the local Go: the proxy serves the toolchain.
        env["GOTOOLCHAIN"] = toolchain
    return env


def run_go(
    cmd: Sequence[str],
    cwd: Path,
    progress: Progress,
    what: str,
    *,
    toolchain: str | None = None,
    nice: bool = False,
) -> str:
    """Run a go command; its stdout, or RuntimeError with the end of its stderr."""
    started = time.monotonic()
    progress(f"{what}: {' '.join(cmd[:3])} ...")
    # nice: long builds share small machines with test runs and other work.
    argv = ["nice", "-n", "10", *cmd] if nice else list(cmd)
    proc = subprocess.run(
        argv, cwd=cwd, env=go_env(toolchain), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    progress(f"{what}: done in {time.monotonic() - started:.0f}s")
    return proc.stdout


def module_info(
    go: str,
    module: str,
    version: str,
    progress: Progress,
    *,
    go_directive: str,
    toolchain: str | None = None,
) -> dict[str, Any]:
    """`go mod download -json module@vX` (fetched into the module cache) from a throwaway
    probe module: the info holds Dir (the unpacked source) and GoMod (its go.mod file)."""
    with tempfile.TemporaryDirectory(prefix="bertops-gomod-") as tmp:
        probe = Path(tmp)
        (probe / "go.mod").write_text(f"module bertops.local/probe\n\ngo {go_directive}\n")
        out = run_go(
            [go, "mod", "download", "-json", f"{module}@v{version}"],
            probe,
            progress,
            f"download {module}@v{version}",
            toolchain=toolchain,
        )
    info: dict[str, Any] = json.loads(out)
    return info


def compile_packages(
    go: str,
    workdir: Path,
    output: Path | str,
    packages: Sequence[str],
    progress: Progress,
    what: str,
    *,
    ldflags: str = "",
    toolchain: str | None = None,
    nice: bool = False,
) -> None:
    """Tidy the wrapper module in ``workdir`` and build ``packages`` into ``output`` (a file
    for one package, a folder ending in "/" for several), stripped and without local paths."""
    tidy = f"resolve the modules of {packages[0]}"
    run_go([go, "mod", "tidy"], workdir, progress, tidy, toolchain=toolchain)
    flags = f"-ldflags=-s -w {ldflags}".rstrip()
    run_go(
        [go, "build", "-trimpath", flags, "-o", str(output), *packages],
        workdir,
        progress,
        what,
        toolchain=toolchain,
        nice=nice,
    )
