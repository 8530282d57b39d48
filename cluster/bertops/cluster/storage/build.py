"""Builds VersityGW (``github.com/versity/versitygw``, Apache-2.0), an S3 server that keeps
buckets as folders of a local filesystem, from its Go module into the versioned cache
(``~/.cache/bertops/versitygw/v<version>/bin/versitygw``). A wrapper module requires the
release and builds its ``cmd/versitygw``; a cached build is reused without the network.

VersityGW rather than MinIO: MinIO's server is AGPL-3.0; VersityGW is Apache-2.0, a single
static binary, and its posix backend needs nothing but a folder.

Called by ``make storage`` (``python -m bertops.cluster.storage.build``, part of
``make dev``), ``bertops cluster storage up`` and the S3 tests' fixtures.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from bertops.cluster.gomod import Progress, compile_packages
from bertops.cluster.kubernetes_source import cache_root, find_go, say, wrapper_module

VERSITYGW_VERSION = "1.8.0"
VERSITYGW_MODULE = "github.com/versity/versitygw"


def binary_path() -> Path:
    return cache_root() / "versitygw" / f"v{VERSITYGW_VERSION}" / "bin" / "versitygw"


def ensure_versitygw(progress: Progress = say, *, rebuild: bool = False) -> Path:
    """The versitygw binary, built first when it is not cached."""
    target = binary_path()
    if target.is_file() and not rebuild:
        return target
    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with tempfile.TemporaryDirectory(prefix="bertops-versitygw-") as tmp:
        workdir = Path(tmp)
        wrapper_module(
            workdir,
            "versitygw-build",
            f"{VERSITYGW_MODULE} v{VERSITYGW_VERSION}",
            [],
            f"{VERSITYGW_MODULE}/cmd/versitygw",
        )
        compile_packages(
            find_go(),
            workdir,
            partial,
            [f"{VERSITYGW_MODULE}/cmd/versitygw"],
            progress,
            f"compile versitygw v{VERSITYGW_VERSION} (a few minutes on 2 cores)",
            nice=True,
        )
    partial.replace(target)
    progress(
        f"versitygw v{VERSITYGW_VERSION} ready in {target} ({time.monotonic() - started:.0f}s)"
    )
    return target


if __name__ == "__main__":
    ensure_versitygw(rebuild="--rebuild" in sys.argv[1:])
