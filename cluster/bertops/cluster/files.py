"""Private files and folders for an embedded cluster: keys, the admin token, tokens.csv
and the kubeconfig are created 0600 and their folders 0700 from the first byte on, so
there is no window in which another local user can read them.

A file is written to a temporary name opened with ``O_CREAT | O_EXCL`` and mode 0600 and
then renamed over the target: the final name never points at a half-written or wider
file, even when an older version of the file had wider permissions. Used by
:mod:`~bertops.cluster.controlplane.certs` and :mod:`~bertops.cluster.controlplane.cluster`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700
# What the control-plane processes run with, so what they create (logs, etcd's data) is
# private too; also the mask our own writes are made under.
UMASK = 0o077


def private_dir(path: Path) -> Path:
    """Create path (and missing parents) as 0700; tighten path itself when it exists.

    Only folders this module creates and path itself are touched: an existing parent
    (say $HOME or a user-chosen BERTOPS_HOME) keeps its mode.
    """
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        # FileExistsError: a concurrent `up` made it meanwhile, with this same mode.
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=DIR_MODE)
    path.chmod(DIR_MODE)
    return path


def write_private(path: Path, data: bytes | str) -> None:
    """Atomically replace path with data, created 0600 (never wider, not even briefly)."""
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            # The mode argument is filtered by the umask; fchmod makes it exactly 0600.
            os.fchmod(handle.fileno(), FILE_MODE)
            handle.write(payload)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def open_private_append(path: Path) -> int:
    """A file descriptor appending to path, creating it 0600 (a process log)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, FILE_MODE)
    os.fchmod(fd, FILE_MODE)  # a log left by an older version may be 0644
    return fd
