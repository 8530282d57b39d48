"""Finding and removing mounts below a folder, from /proc/self/mountinfo: what the node's
clean-up (container root filesystems, pod network namespaces, volumes) and the image
builds (a chroot's /proc, /dev and bind mounts) must leave behind as nothing.

Called by :mod:`bertops.cluster.node.cleanup` and :mod:`bertops.cluster.images.rootfs`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def _unescape(field: str) -> str:
    """Mount points in mountinfo escape space, tab, newline and backslash as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mounts_under(folder: Path, mountinfo: str | None = None) -> list[Path]:
    """Mount points at or below folder, deepest first (so children unmount first), from
    mountinfo (default: this process's /proc/self/mountinfo)."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    prefix = str(folder.resolve() if folder.exists() else folder).rstrip("/")
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = _unescape(fields[4])
        if point == prefix or point.startswith(prefix + "/"):
            found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount_all(folder: Path) -> list[Path]:
    """Unmount everything below folder (lazily when busy); the mount points unmounted."""
    done: list[Path] = []
    for _ in range(5):  # a bind of a bind shows up again after its parent goes
        points = mounts_under(folder)
        if not points:
            break
        for point in points:
            proc = subprocess.run(["umount", str(point)], capture_output=True, check=False)
            if proc.returncode != 0:
                subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)
            done.append(point)
    return done
