"""OCI image archives written directly (no registry, no buildah): layers
(``application/vnd.oci.image.layer.v1.tar``, or ``+zstd``), each made by GNU tar from a folder
into a file of its own (cached apart, so an unchanged dependency layer is never made
twice), the image config, the manifest and an ``index.json`` naming every tag, all in one
tar file (an "OCI archive" that ``ctr images import`` and ``skopeo`` read).
Called by :mod:`bertops.cluster.images.build`; the pure parts (config, manifest, index)
are unit-tested."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
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


@dataclass(frozen=True)
class Layer:
    """One layer blob ready to go into an archive: in a file (a cached layer) or in
    memory (a small one), with its descriptor and diff ID (the uncompressed digest)."""

    descriptor: dict[str, Any]
    diff_id: str
    path: Path | None = None
    data: bytes | None = None

    @classmethod
    def from_bytes(cls, data: bytes) -> Layer:
        """An uncompressed layer held in memory."""
        layer = descriptor(LAYER_TYPE, data)
        return cls(layer, layer["digest"], data=data)


def write_layer(
    folder: Path, target: Path, zstd_level: int | None = None, excluded: tuple[str, ...] = EXCLUDED
) -> Layer:
    """Stream a tar of ``folder`` (through ``zstd`` with a level) into the file ``target``,
    hashing on the way; the layer it holds."""
    command = [
        "tar",
        "--create",
        "--file=-",
        "--format=posix",
        "--pax-option=delete=atime,delete=ctime",
        "--numeric-owner",
        "--sort=name",
        "--directory",
        str(folder),
        *(f"--exclude={pattern}" for pattern in excluded),
        ".",
    ]
    with target.open("wb") as out:
        sink = _Sink(out)
        if zstd_level is None:
            with subprocess.Popen(command, stdout=subprocess.PIPE) as tar:
                assert tar.stdout is not None
                while chunk := tar.stdout.read(1 << 20):
                    sink.write(chunk)
            if tar.returncode != 0:
                raise RuntimeError(f"tar of {folder} failed ({tar.returncode})")
            diff_id = sink.sha.hexdigest()
        else:
            diff_id = _zstd_stream(command, sink, zstd_level)
    media_type = LAYER_TYPE if zstd_level is None else ZSTD_LAYER_TYPE
    layer = {"mediaType": media_type, "digest": f"sha256:{sink.sha.hexdigest()}", "size": sink.size}
    return Layer(layer, f"sha256:{diff_id}", path=target)


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
    target: Path, tags: list[str], config: ImageConfig, layers: list[Layer]
) -> dict[str, Any]:
    """Write the OCI archive ``target`` holding ``layers`` (bottom first), the config and
    the manifest; returns the manifest as a dict. A layer in a file is copied in."""
    now = time.time()
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    with target.open("wb") as out:
        _member(out, "oci-layout", canonical({"imageLayoutVersion": "1.0.0"}), now)
        for layer in layers:
            name = "blobs/sha256/" + layer.descriptor["digest"][7:]
            if layer.data is not None:
                _member(out, name, layer.data, now)
            elif layer.path is not None:
                _file_member(out, name, layer.path, now)
            else:
                raise ValueError("a layer needs its bytes or a file")
        config_blob = config_json(config, [layer.diff_id for layer in layers], created)
        manifest = manifest_json(config_blob, [layer.descriptor for layer in layers])
        for blob in (config_blob, manifest):
            _member(out, "blobs/sha256/" + hashlib.sha256(blob).hexdigest(), blob, now)
        _member(out, "index.json", index_json(manifest, tags), now)
        out.write(b"\0" * (2 * BLOCK))
        out.write(b"\0" * (-out.tell() % tarfile.RECORDSIZE))
    result: dict[str, Any] = json.loads(manifest)
    return result


def _file_member(out: IO[bytes], name: str, path: Path, mtime: float) -> None:
    size = path.stat().st_size
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(mtime), 0o644
    out.write(info.tobuf(format=tarfile.GNU_FORMAT))  # base-256 sizes past 8 GiB
    with path.open("rb") as source:
        shutil.copyfileobj(source, out, 1 << 20)
    out.write(b"\0" * (-size % BLOCK))
