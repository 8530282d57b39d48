"""OCI image archives written directly (no registry, no buildah): one uncompressed layer
(``application/vnd.oci.image.layer.v1.tar``) made by GNU tar from a root filesystem
folder, the image config, the manifest and an ``index.json`` naming every tag, all in one
tar file (an "OCI archive" that ``ctr images import`` and ``skopeo`` read). The layer is
streamed straight into the archive, so a multi-GB rootfs is read once and written once.
Called by :mod:`bertops.cluster.images.build`; the pure parts (config, manifest, index)
are unit-tested."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
# A zstd-compressed layer (containerd >= 1.5 unpacks it): about half the disk.
ZSTD_LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+zstd"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
# containerd names an imported image after this annotation (the full reference) ...
CONTAINERD_NAME = "io.containerd.image.name"
# ... and other OCI tools after this one.
REF_NAME = "org.opencontainers.image.ref.name"
PLATFORM = {"architecture": "amd64", "os": "linux"}
BLOCK = 512
# Folders whose contents never belong in an image (the runtime mounts its own).
EXCLUDED = ("./proc/*", "./sys/*", "./dev/*", "./run/*", "./tmp/*", "./.bertops-complete")


@dataclass(frozen=True)
class ImageConfig:
    """What a container of the image runs, and as whom."""

    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    user: str = ""
    working_dir: str = ""
    labels: dict[str, str] = field(default_factory=dict)


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    """An OCI content descriptor for ``data``."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}


def config_json(config: ImageConfig, diff_ids: list[str], created: str) -> bytes:
    """The image configuration blob (OCI image-spec config.md)."""
    run: dict[str, Any] = {"Env": [f"{k}={v}" for k, v in config.env.items()]}
    if config.entrypoint is not None:
        run["Entrypoint"] = config.entrypoint
    if config.cmd is not None:
        run["Cmd"] = config.cmd
    if config.user:
        run["User"] = config.user
    if config.working_dir:
        run["WorkingDir"] = config.working_dir
    if config.labels:
        run["Labels"] = config.labels
    document = {
        "created": created,
        **PLATFORM,
        "config": run,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": created, "created_by": "bertops images build"}],
    }
    return canonical(document)


def manifest_json(config: bytes, layers: list[dict[str, Any]]) -> bytes:
    """The image manifest blob pointing at the config and the layers."""
    document = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": descriptor(CONFIG_TYPE, config),
        "layers": layers,
    }
    return canonical(document)


def index_json(manifest: bytes, tags: list[str]) -> bytes:
    """``index.json``: the manifest once per tag, each named for containerd and OCI tools."""
    manifests = [
        descriptor(
            MANIFEST_TYPE,
            manifest,
            platform=dict(PLATFORM),
            annotations={CONTAINERD_NAME: tag, REF_NAME: tag},
        )
        for tag in tags
    ]
    return canonical({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": manifests})


def canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


class _Sink:
    """Writes through to a file while hashing and counting."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.target.write(data)
        self.sha.update(data)
        self.size += len(data)


def _member(out: IO[bytes], name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(mtime), 0o644
    out.write(info.tobuf(format=tarfile.GNU_FORMAT))
    out.write(data)
    out.write(b"\0" * (-len(data) % BLOCK))


def _layer_from_rootfs(
    out: IO[bytes], rootfs: Path, mtime: float, zstd_level: int | None = None
) -> tuple[dict[str, Any], str]:
    """Stream a tar of ``rootfs`` (through ``zstd`` with a level) into ``out`` as
    ``blobs/sha256/<digest>``: the entry's header is reserved first and written once the
    layer's digest and size are known. Returns the layer's descriptor and diff ID (the
    digest of the uncompressed tar)."""
    header_at = out.tell()
    out.write(b"\0" * BLOCK)
    sink = _Sink(out)
    command = [
        "tar",
        "--create",
        "--file=-",
        "--format=posix",
        "--pax-option=delete=atime,delete=ctime",
        "--numeric-owner",
        "--sort=name",
        "--directory",
        str(rootfs),
        *(f"--exclude={pattern}" for pattern in EXCLUDED),
        ".",
    ]
    if zstd_level is None:
        with subprocess.Popen(command, stdout=subprocess.PIPE) as tar:
            assert tar.stdout is not None
            while chunk := tar.stdout.read(1 << 20):
                sink.write(chunk)
        if tar.returncode != 0:
            raise RuntimeError(f"tar of {rootfs} failed ({tar.returncode})")
        diff_id = sink.sha.hexdigest()
    else:
        diff_id = _zstd_stream(command, sink, zstd_level)
    out.write(b"\0" * (-sink.size % BLOCK))
    end = out.tell()
    digest = sink.sha.hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size, info.mtime, info.mode = sink.size, int(mtime), 0o644
    out.seek(header_at)
    out.write(info.tobuf(format=tarfile.GNU_FORMAT))  # base-256 sizes past 8 GiB
    out.seek(end)
    media_type = LAYER_TYPE if zstd_level is None else ZSTD_LAYER_TYPE
    layer = {"mediaType": media_type, "digest": f"sha256:{digest}", "size": sink.size}
    return layer, f"sha256:{diff_id}"


def _zstd_stream(command: list[str], sink: _Sink, level: int) -> str:
    """tar | zstd into ``sink``; the sha256 of the uncompressed tar, hashed on the way."""
    diff = hashlib.sha256()
    zstd_command = ["zstd", f"-{level}", "-T0", "-q", "-c"]
    with (
        subprocess.Popen(command, stdout=subprocess.PIPE) as tar,
        subprocess.Popen(zstd_command, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as zstd,
    ):
        assert tar.stdout is not None and zstd.stdin is not None and zstd.stdout is not None
        source, compressor = tar.stdout, zstd.stdin

        def feed() -> None:
            try:
                while chunk := source.read(1 << 20):
                    diff.update(chunk)
                    compressor.write(chunk)
            finally:
                compressor.close()

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        while chunk := zstd.stdout.read(1 << 20):
            sink.write(chunk)
        feeder.join()
    if tar.returncode != 0 or zstd.returncode != 0:
        raise RuntimeError(f"tar ({tar.returncode}) | zstd ({zstd.returncode}) failed")
    return diff.hexdigest()


def layer_from_files(files: dict[str, tuple[bytes, int]], mtime: float) -> bytes:
    """A small layer built in memory: path -> (content, mode); parent folders added."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        folders = sorted({str(Path(p).parent) for p in files} - {"."})
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(mtime)
            tar.addfile(info)
        for path, (data, mode) in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), mode, int(mtime)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_archive(
    target: Path,
    tags: list[str],
    config: ImageConfig,
    rootfs: Path | None = None,
    layer: bytes | None = None,
    zstd_level: int | None = None,
) -> dict[str, Any]:
    """Write the OCI archive ``target`` with one layer, from a rootfs folder (streamed
    through GNU tar, and zstd with a level) or from ready uncompressed layer bytes;
    returns the manifest as a dict."""
    now = time.time()
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    with target.open("wb") as out:
        _member(out, "oci-layout", canonical({"imageLayoutVersion": "1.0.0"}), now)
        if rootfs is not None:
            layer_descriptor, diff_id = _layer_from_rootfs(out, rootfs, now, zstd_level)
        elif layer is not None:
            layer_descriptor = descriptor(LAYER_TYPE, layer)
            diff_id = layer_descriptor["digest"]
            _member(out, "blobs/sha256/" + layer_descriptor["digest"][7:], layer, now)
        else:
            raise ValueError("write_archive needs a rootfs or a layer")
        config_blob = config_json(config, [diff_id], created)
        manifest = manifest_json(config_blob, [layer_descriptor])
        for blob in (config_blob, manifest):
            _member(out, "blobs/sha256/" + hashlib.sha256(blob).hexdigest(), blob, now)
        _member(out, "index.json", index_json(manifest, tags), now)
        out.write(b"\0" * (2 * BLOCK))
        out.write(b"\0" * (-out.tell() % tarfile.RECORDSIZE))
    result: dict[str, Any] = json.loads(manifest)
    return result
