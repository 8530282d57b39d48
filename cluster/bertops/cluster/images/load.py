"""Importing the cached image archives into a containerd (``ctr images import``, the
``k8s.io`` namespace the CRI plugin and so the kubelet read), for a node's containerd
(:mod:`bertops.cluster.node.start`) or ``bertops images build --import-to``. Needs
``ctr`` (Debian's containerd)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence

from bertops.cluster.images import rootfs
from bertops.cluster.images.build import current_archive
from bertops.cluster.images.recipes import RECIPES


class LoadError(RuntimeError):
    """ctr failed, or an archive to import is not built yet."""


def ctr(address: str, namespace: str, *args: str, timeout: float = 1800) -> str:
    """Run ``ctr`` against ``address`` in ``namespace``; its output."""
    command = ["ctr", "--address", address, "--namespace", namespace, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise LoadError(f"{' '.join(command)} failed: {result.stderr.strip()[-2000:]}")
    return result.stdout


def import_images(
    address: str,
    namespace: str = "k8s.io",
    names: Sequence[str] | None = None,
    say: rootfs.Say = print,
) -> list[str]:
    """Import the cached archives of the named images (all by default) as they are for
    the current inputs; the tags now in containerd."""
    tags: list[str] = []
    for name in names or list(RECIPES):
        recipe = RECIPES[name]
        archive = current_archive(recipe)
        if not archive.exists():
            raise LoadError(f"{archive} is missing: run `bertops images build --only {name}`")
        started = time.monotonic()
        say(f"{name}: importing {archive.name} into {address} ({namespace}) ...")
        # The archive holds linux/amd64 only, so the default platform filter is enough;
        # the index names each tag in io.containerd.image.name, so no --base-name.
        ctr(address, namespace, "images", "import", str(archive))
        listed = ctr(address, namespace, "images", "ls", "--quiet").split()
        missing = [tag for tag in recipe.tags if tag not in listed]
        if missing:
            raise LoadError(f"after importing {archive.name}, {missing} are not listed")
        say(f"{name}:   imported {', '.join(recipe.tags)} in {time.monotonic() - started:.0f}s")
        tags.extend(recipe.tags)
    return tags
