"""Importing only what a node's image store lacks: the archive's manifest and blobs are
read from its index, ``ctr ... ls`` tables are parsed, and a thin copy leaves out the
blobs the store holds while staying an archive of the same image. The import itself runs
against a real containerd in the node e2e tests (tests/node)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from bertops.cluster.images import oci
from bertops.cluster.images.load import archive_manifest, listed_digests, thin_copy
from bertops.cluster.images.recipes import ML

IMAGES_LS = """REF                       TYPE                                       DIGEST      SIZE     PLATFORMS   LABELS
bertops.local/pause:3.10  application/vnd.oci.image.manifest.v1+json sha256:aa 1.9 MiB  linux/amd64 io.cri-containerd.image=managed
ghcr.io/bertops/x:0.1.0   application/vnd.oci.image.manifest.v1+json sha256:bb 3.0 GiB  linux/amd64 -
"""  # noqa: E501 - the table as ctr prints it
CONTENT_LS = """DIGEST\tSIZE\tAGE\tLABELS
sha256:cc\t400B\t2 minutes\tcontainerd.io/gc.ref.content.l.0=sha256:dd
sha256:dd\t1.9MB\t2 minutes\t
"""


def test_ctr_tables_are_read_by_column() -> None:
    assert listed_digests(IMAGES_LS, 2) == {
        "bertops.local/pause:3.10": "sha256:aa",
        "ghcr.io/bertops/x:0.1.0": "sha256:bb",
    }
    assert set(listed_digests(CONTENT_LS, 0)) == {"sha256:cc", "sha256:dd"}


def two_layer_archive(tmp_path: Path) -> tuple[Path, oci.Layer, oci.Layer]:
    deps = oci.Layer.from_bytes(oci.layer_from_files({"opt/deps.py": (b"d" * 4096, 0o644)}, 0))
    project = oci.Layer.from_bytes(oci.layer_from_files({"opt/app.py": (b"a", 0o644)}, 0))
    archive = tmp_path / "ml.tar"
    oci.write_archive(archive, list(ML.tags), ML.config, [deps, project])
    return archive, deps, project


def test_a_thin_copy_leaves_out_the_blobs_the_store_holds(tmp_path: Path) -> None:
    archive, deps, project = two_layer_archive(tmp_path)
    manifest, blobs = archive_manifest(archive)
    assert {deps.descriptor["digest"], project.descriptor["digest"], manifest} <= set(blobs)

    thin = tmp_path / "thin.tar"
    skipped = thin_copy(archive, {deps.descriptor["digest"]}, thin)

    assert skipped == deps.descriptor["size"]
    thin_manifest, thin_blobs = archive_manifest(thin)
    assert thin_manifest == manifest  # the same image, by the same manifest
    assert set(thin_blobs) == set(blobs) - {deps.descriptor["digest"]}
    with tarfile.open(thin) as tar:
        member = tar.extractfile("blobs/sha256/" + manifest[7:])
        assert member is not None
        layers = json.loads(member.read())["layers"]
    assert [layer["digest"] for layer in layers] == [
        deps.descriptor["digest"],
        project.descriptor["digest"],
    ]
