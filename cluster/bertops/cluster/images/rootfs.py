"""Debian root filesystems for the local image builds: a debootstrapped (minbase,
bookworm) base rootfs cached once, copies of it per image, and commands run inside a copy
with ``chroot`` under bind mounts (/proc, /dev, the host's pip cache) that are always
unmounted again. Called by :mod:`bertops.cluster.images.build`; needs root and the
``debootstrap`` command (Debian's package of the same name)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from bertops.cluster import mounts
from bertops.cluster.mounts import mounts_under

SUITE = "bookworm"
# Python 3.11 (the project's), its venv module and the CA bundle pip verifies PyPI with.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
FALLBACK_MIRROR = "http://deb.debian.org/debian"
# The chroot's environment: nothing from the host but a PATH and a locale.
CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "DEBIAN_FRONTEND": "noninteractive",
}

Say = Callable[[str], None]


class RootfsError(RuntimeError):
    """debootstrap, a chroot command or a mount failed."""


def debian_mirror(sources: Sequence[Path] | None = None) -> str:
    """The Debian mirror apt uses here (the first ``debian`` URI in the sources lists)."""
    if sources is None:
        directory = Path("/etc/apt/sources.list.d")
        listed = sorted(directory.glob("*")) if directory.is_dir() else []
        sources = [Path("/etc/apt/sources.list"), *listed]
    for path in sources:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                words = line.split()
                uris = words[1:] if words[:1] == ["URIs:"] else []
                if words[:1] == ["deb"]:
                    uris = [w for w in words[1:] if "://" in w][:1]
                for uri in uris:
                    if uri.rstrip("/").endswith("/debian"):
                        return uri.rstrip("/")
    return FALLBACK_MIRROR


def ensure_base(cache: Path, say: Say) -> Path:
    """The cached base rootfs (debootstrap once; later calls reuse it)."""
    base = cache / "rootfs" / f"{SUITE}-minbase"
    if (base / ".bertops-complete").exists():
        return base
    if shutil.which("debootstrap") is None:
        raise RootfsError("debootstrap is missing: apt-get install -y debootstrap")
    partial = base.with_name(base.name + ".partial")
    if partial.exists():
        unmount_all(partial)
        remove_rootfs(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    mirror = debian_mirror()
    say(f"debootstrap {SUITE} (minbase + {', '.join(BASE_PACKAGES)}) from {mirror} ...")
    started = time.monotonic()
    command = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(BASE_PACKAGES)}",
        SUITE,
        str(partial),
        mirror,
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    finally:
        unmount_all(partial)  # debootstrap mounts /proc and /sys in the target itself
    if result.returncode != 0:
        raise RootfsError(f"debootstrap failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")
    clean_apt(partial)
    (partial / ".bertops-complete").write_text(f"{SUITE} {mirror}\n")
    if base.exists():
        shutil.rmtree(base)
    partial.rename(base)
    say(f"  base rootfs ready in {time.monotonic() - started:.0f}s ({tree_size(base)})")
    return base


def copy_rootfs(base: Path, target: Path) -> None:
    """A fresh copy of ``base`` at ``target`` (hard links, owners and modes kept)."""
    if target.exists():
        remove_rootfs(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(base), str(target)], check=True)
    (target / ".bertops-complete").unlink(missing_ok=True)


def remove_rootfs(target: Path) -> None:
    """Delete a rootfs copy, refusing while anything is still mounted below it."""
    if mounts_under(target):
        raise RootfsError(f"refusing to delete {target}: still mounted {mounts_under(target)}")
    shutil.rmtree(target)


def clean_apt(root: Path) -> None:
    """Drop apt's package lists and downloaded .debs (they only make the image bigger)."""
    for folder in (root / "var/lib/apt/lists", root / "var/cache/apt"):
        if folder.is_dir():
            for entry in folder.rglob("*"):
                if entry.is_file() or entry.is_symlink():
                    entry.unlink()


def unmount_all(root: Path) -> None:
    """Unmount everything at or below ``root``, deepest first; raise if any stays."""
    mounts.unmount_all(root)
    if mounts_under(root):
        raise RootfsError(f"could not unmount {mounts_under(root)}")


@contextlib.contextmanager
def mounted(root: Path, binds: Sequence[tuple[Path, str]] = ()) -> Iterator[None]:
    """/proc, /dev and the given (host path, path in the rootfs) binds, for a chroot;
    everything mounted here is unmounted on the way out, even after an error."""
    done: list[Path] = []
    try:
        for source, inside in [(Path("/dev"), "/dev"), *binds]:
            point = root / inside.lstrip("/")
            point.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", "--bind", str(source), str(point)], check=True)
            done.append(point)
        proc = root / "proc"
        proc.mkdir(exist_ok=True)
        subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
        done.append(proc)
        yield
    finally:
        errors = []
        for point in reversed(done):
            result = subprocess.run(["umount", str(point)], capture_output=True, check=False)
            if result.returncode != 0:
                lazy = subprocess.run(
                    ["umount", "-l", str(point)], capture_output=True, check=False
                )
                if lazy.returncode != 0:
                    errors.append(str(point))
        # Below root only: root itself may be a mount point (an overlay's merged view).
        left = [point for point in mounts_under(root) if point != root.resolve()]
        if errors or left:
            raise RootfsError(f"could not unmount {errors or left}")


def chroot(root: Path, script: str, env: dict[str, str] | None = None) -> None:
    """Run a shell script inside ``root`` (mounts must be in place: see :func:`mounted`)."""
    command = ["chroot", str(root), "/bin/sh", "-euc", script]
    result = subprocess.run(
        command, env={**CHROOT_ENV, **(env or {})}, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-4000:]
        raise RootfsError(f"in the chroot, {script!r} failed ({result.returncode}):\n{tail}")


def tree_size(root: Path) -> str:
    """``du -sh`` of a folder, for progress lines."""
    result = subprocess.run(["du", "-sh", str(root)], capture_output=True, text=True, check=False)
    return result.stdout.split()[0] if result.returncode == 0 and result.stdout else "?"


def human(size: float) -> str:
    """A byte count as 1.2 GB."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{size:.0f} B"
        size /= 1000
    return f"{size:.1f} GB"


def is_root() -> bool:
    """Whether this process may debootstrap, chroot and mount."""
    return os.geteuid() == 0
