"""Builds the images of :mod:`bertops.cluster.images.recipes` into OCI archives in the
cache (``$BERTOPS_CACHE`` or ~/.cache/bertops, ``images/<name>-<key12>.tar``). A Python
image has two layers (:mod:`bertops.cluster.images.layers`): the dependencies, cached and
rebuilt only when constraints.txt, pyproject.toml or the recipe change, and the project,
made by ``pip install --no-deps`` on top of them for each source edit. The pause image is
one layer of a static busybox. An archive whose inputs did not change is reused; a build
writes a temporary name and renames it at the end, so a partial build never looks
complete. Called by ``bertops images build``."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from bertops.cluster.images import layers, oci, rootfs
from bertops.cluster.images.recipes import (
    RECIPES,
    Recipe,
    archive_path,
    busybox_path,
    cache_key,
)

ZSTD_LEVEL = 3  # fast; CUDA libraries shrink to about half


@dataclass(frozen=True)
class Built:
    """One image in the cache."""

    recipe: Recipe
    path: Path
    reused: bool
    seconds: float

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def cache_root() -> Path:
    return Path(os.environ.get("BERTOPS_CACHE", Path.home() / ".cache" / "bertops"))


def images_dir() -> Path:
    return cache_root() / "images"


def repo_root() -> Path:
    """The checkout the images are built from (this file is cluster/bertops/cluster/...)."""
    return Path(__file__).resolve().parents[4]


def current_archive(recipe: Recipe, repo: Path | None = None) -> Path:
    """The cache path for ``recipe`` with the inputs as they are now: the newest of the
    uncompressed and the zstd build, or the uncompressed one's path if neither exists."""
    repo = repo or repo_root()
    paths = [
        archive_path(images_dir(), recipe, cache_key(recipe, repo, zstd=z)) for z in (False, True)
    ]
    existing = [path for path in paths if path.exists()]
    return max(existing, key=lambda path: path.stat().st_mtime) if existing else paths[0]


def build(
    names: list[str] | None = None,
    rebuild: bool = False,
    zstd: bool = False,
    repo: Path | None = None,
    say: rootfs.Say = print,
) -> list[Built]:
    """Build (or reuse) the named images (all by default), in order."""
    repo = repo or repo_root()
    results = []
    for name in names or list(RECIPES):
        recipe = RECIPES[name]
        started = time.monotonic()
        key = cache_key(recipe, repo, zstd=zstd)
        target = archive_path(images_dir(), recipe, key)
        cached = current_archive(recipe, repo)  # either compression will do
        if cached.exists() and not rebuild:
            say(f"{name}: cached {cached} ({rootfs.human(cached.stat().st_size)})")
            results.append(Built(recipe, cached, True, time.monotonic() - started))
            continue
        if not rootfs.is_root():
            raise rootfs.RootfsError("building images needs root (debootstrap, chroot, mount)")
        target.parent.mkdir(parents=True, exist_ok=True)
        # An archive of other inputs is never imported again: free its disk first (the
        # ML image needs about 15 GB while it is built: the rootfs plus the archive).
        for stale in target.parent.glob(f"{recipe.name}-*.tar"):
            if stale != target:
                say(f"{name}: removing the stale {stale.name}")
                stale.unlink()
        free = rootfs.human(shutil.disk_usage(target.parent).free)
        say(f"{name}: building {', '.join(recipe.tags)} ({recipe.description}; {free} free) ...")
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            if recipe.busybox:
                _build_busybox(recipe, partial)
            else:
                _build_python(recipe, repo, key, partial, say, ZSTD_LEVEL if zstd else None)
            partial.rename(target)
        finally:
            partial.unlink(missing_ok=True)
        seconds = time.monotonic() - started
        say(f"{name}: built {target} in {seconds:.0f}s ({rootfs.human(target.stat().st_size)})")
        results.append(Built(recipe, target, False, seconds))
    return results


def _build_busybox(recipe: Recipe, partial: Path) -> None:
    binary = busybox_path().read_bytes()
    if not is_static_elf(binary):
        raise rootfs.RootfsError("busybox is dynamically linked: apt-get install busybox-static")
    layer = oci.layer_from_files({"bin/busybox": (binary, 0o755)}, time.time())
    oci.write_archive(partial, list(recipe.tags), recipe.config, [oci.Layer.from_bytes(layer)])


def is_static_elf(binary: bytes) -> bool:
    """Whether a 64-bit little-endian ELF executable has no interpreter (PT_INTERP)."""
    if binary[:6] != b"\x7fELF\x02\x01":
        return False
    phoff = int.from_bytes(binary[32:40], "little")
    size = int.from_bytes(binary[54:56], "little")
    count = int.from_bytes(binary[56:58], "little")
    types = [
        int.from_bytes(binary[phoff + i * size : phoff + i * size + 4], "little")
        for i in range(count)
    ]
    return 3 not in types  # PT_INTERP


def _build_python(
    recipe: Recipe, repo: Path, key: str, partial: Path, say: rootfs.Say, zstd_level: int | None
) -> None:
    deps = layers.ensure_deps(recipe, repo, images_dir(), say, zstd_level)
    work = images_dir() / "work" / f"{recipe.name}-{key[:12]}"
    # An interrupted build's overlay of any key: nothing else would remove it.
    for stale in work.parent.glob(f"{recipe.name}-*") if work.parent.is_dir() else []:
        say(f"{recipe.name}: removing the interrupted build's {stale.name}")
        rootfs.unmount_all(stale)
        shutil.rmtree(stale)
    step = time.monotonic()
    try:
        say(f"{recipe.name}: pip install --no-deps of the checkout on the dependency layer ...")
        project = layers.project_layer(recipe, repo, deps, work, zstd_level)
        size = rootfs.human(project.descriptor["size"])
        say(f"{recipe.name}:   project layer in {time.monotonic() - step:.0f}s ({size})")
        oci.write_archive(partial, list(recipe.tags), recipe.config, [deps.layer, project])
    finally:
        if work.exists():
            rootfs.unmount_all(work)
            shutil.rmtree(work)
