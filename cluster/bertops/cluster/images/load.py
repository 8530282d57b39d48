"""Importing the cached image archives into a containerd (``ctr images import``, the
``k8s.io`` namespace the CRI plugin and so the kubelet read), for a node's containerd
(:mod:`bertops.cluster.node.start`) or ``bertops images build --import-to``. Needs
``ctr`` (Debian's containerd).

Only what the store lacks is imported. containerd 1.6's ``ctr images import`` writes
every blob of an archive again, even one it holds (it learns a blob's digest only after
writing it): 40 s for the ML image's dependency layer. So an image whose every tag already
names the archive's manifest is skipped, and otherwise a thin copy of the archive, without
the blobs the store holds, is imported; containerd unpacks the new layers on top of the
snapshots it has.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

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


def listed_digests(table: str, column: int) -> dict[str, str]:
    """``ctr ... ls`` output as {first column: the column's digest} (header skipped)."""
    rows = [line.split() for line in table.splitlines()[1:]]
    return {row[0]: row[column] for row in rows if len(row) > column}


def archive_manifest(archive: Path) -> tuple[str, list[str]]:
    """The manifest digest an archive's index names, and the blob digests it holds."""
    with tarfile.open(archive) as tar:  # an uncompressed tar: headers are read by seeking
        names = tar.getnames()
        index_member = tar.extractfile("index.json")
        if index_member is None:
            raise LoadError(f"{archive} has no index.json")
        index = json.loads(index_member.read())
    blobs = ["sha256:" + name.rsplit("/", 1)[1] for name in names if name.startswith("blobs/")]
    return index["manifests"][0]["digest"], blobs


def thin_copy(archive: Path, held: set[str], target: Path) -> int:
    """Copy ``archive`` to ``target`` without the blobs whose digests are in ``held``;
    the bytes of blobs left out."""
    skipped = 0
    with (
        tarfile.open(archive) as source,
        tarfile.open(target, "w", format=tarfile.GNU_FORMAT) as out,
    ):
        for member in source.getmembers():
            blob = member.name.startswith("blobs/")
            if blob and "sha256:" + member.name.rsplit("/", 1)[1] in held:
                skipped += member.size
                continue
            out.addfile(member, source.extractfile(member) if member.isfile() else None)
    return skipped


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
        manifest, blobs = archive_manifest(archive)
        images = listed_digests(ctr(address, namespace, "images", "ls"), 2)
        if all(images.get(tag) == manifest for tag in recipe.tags):
            say(f"{name}: {', '.join(recipe.tags)} already in the store ({archive.name})")
            tags.extend(recipe.tags)
            continue
        held = set(listed_digests(ctr(address, namespace, "content", "ls"), 0)) & set(blobs)
        with tempfile.TemporaryDirectory(dir=archive.parent, prefix=".import-") as scratch:
            source = archive
            if held:
                source = Path(scratch) / archive.name
                skipped = thin_copy(archive, held, source)
                say(f"{name}: the store holds {len(held)} of its blobs ({rootfs.human(skipped)})")
            say(f"{name}: importing {archive.name} into {address} ({namespace}) ...")
            # The archive holds linux/amd64 only, so the default platform filter is enough;
            # the index names each tag in io.containerd.image.name, so no --base-name.
            ctr(address, namespace, "images", "import", str(source))
        listed = ctr(address, namespace, "images", "ls", "--quiet").split()
        missing = [tag for tag in recipe.tags if tag not in listed]
        if missing:
            raise LoadError(f"after importing {archive.name}, {missing} are not listed")
        say(f"{name}:   imported {', '.join(recipe.tags)} in {time.monotonic() - started:.0f}s")
        tags.extend(recipe.tags)
    return tags
