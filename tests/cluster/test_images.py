"""`bertops images build`: the cache key follows every input, and the OCI archives it
writes (index, manifest, config, one uncompressed layer) are consistent. Fast and
offline; the images themselves run in real pods in tests/node (the node e2e tests)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from bertops.cluster.images import oci
from bertops.cluster.images.build import is_static_elf
from bertops.cluster.images.recipes import ML, OPERATOR, PAUSE, archive_path, cache_key
from bertops.cluster.images.rootfs import debian_mirror


def fake_repo(root: Path) -> Path:
    for name, text in {
        "pyproject.toml": "[project]\nname='x'\n",
        "constraints.txt": "torch==1\n",
        "README.md": "x\n",
        "operator/bertops/operator/a.py": "A = 1\n",
        "trainer/bertops/trainer/b.py": "B = 1\n",
        "docs/unrelated.md": "not an input\n",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(
    "changed", ["pyproject.toml", "constraints.txt", "operator/bertops/operator/a.py"]
)
def test_cache_key_changes_with_each_input(tmp_path: Path, changed: str) -> None:
    repo = fake_repo(tmp_path)
    before = cache_key(ML, repo)
    assert cache_key(ML, repo) == before  # stable
    (repo / changed).write_text((repo / changed).read_text() + "# changed\n")
    assert cache_key(ML, repo) != before


def test_cache_key_ignores_files_outside_the_sources(tmp_path: Path) -> None:
    repo = fake_repo(tmp_path)
    before = cache_key(ML, repo)
    (repo / "docs/unrelated.md").write_text("edited\n")
    (repo / "operator/bertops/operator/__pycache__").mkdir()
    (repo / "operator/bertops/operator/__pycache__/a.pyc").write_bytes(b"\0")
    assert cache_key(ML, repo) == before


def test_cache_key_follows_the_recipe_and_a_new_file(tmp_path: Path) -> None:
    repo = fake_repo(tmp_path)
    keys = {cache_key(ML, repo), cache_key(OPERATOR, repo)}
    keys.add(cache_key(replace(ML, no_deps_packages=()), repo))
    keys.add(cache_key(ML, repo, zstd=True))
    assert len(keys) == 4
    before = cache_key(ML, repo)
    (repo / "trainer/bertops/trainer/new.py").write_text("")
    assert cache_key(ML, repo) != before


def test_cache_key_of_the_checkout_uses_git_tracked_files() -> None:
    repo = Path(__file__).resolve().parents[2]
    if shutil.which("git") is None or not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    key = cache_key(OPERATOR, repo)
    assert archive_path(Path("/c"), OPERATOR, key) == Path(f"/c/operator-{key[:12]}.tar")


def read_archive(path: Path) -> dict[str, bytes]:
    contents: dict[str, bytes] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            if member.isfile():
                handle = tar.extractfile(member)  # None only for what is not a file
                assert handle is not None
                contents[member.name] = handle.read()
    return contents


def check_archive(path: Path, tags: list[str], zstd: bool = False) -> tuple[dict, dict, bytes]:
    files = read_archive(path)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    index = json.loads(files["index.json"])
    assert [m["annotations"][oci.CONTAINERD_NAME] for m in index["manifests"]] == tags
    assert {m["digest"] for m in index["manifests"]} == {index["manifests"][0]["digest"]}
    entry = index["manifests"][0]
    assert entry["platform"] == {"architecture": "amd64", "os": "linux"}
    manifest_blob = files["blobs/sha256/" + entry["digest"][7:]]
    assert len(manifest_blob) == entry["size"]
    manifest = json.loads(manifest_blob)
    assert manifest["mediaType"] == oci.MANIFEST_TYPE
    assert manifest["config"]["mediaType"] == oci.CONFIG_TYPE
    config = json.loads(files["blobs/sha256/" + manifest["config"]["digest"][7:]])
    [layer] = manifest["layers"]
    layer_blob = files["blobs/sha256/" + layer["digest"][7:]]
    assert len(layer_blob) == layer["size"]
    if zstd:
        assert layer["mediaType"] == oci.ZSTD_LAYER_TYPE
        layer_blob = subprocess.run(
            ["zstd", "-d", "-c"], input=layer_blob, capture_output=True, check=True
        ).stdout
    else:
        assert layer["mediaType"] == oci.LAYER_TYPE
    diff_id = "sha256:" + hashlib.sha256(layer_blob).hexdigest()
    assert config["rootfs"] == {"type": "layers", "diff_ids": [diff_id]}
    return manifest, config, layer_blob


def test_archive_from_layer_bytes(tmp_path: Path) -> None:
    layer = oci.layer_from_files({"bin/busybox": (b"\x7fELF...", 0o755)}, 0)
    target = tmp_path / "pause.tar"
    oci.write_archive(target, list(PAUSE.tags), PAUSE.config, [oci.Layer.from_bytes(layer)])
    _, config, layer_blob = check_archive(target, list(PAUSE.tags))
    assert config["config"]["Entrypoint"] == ["/bin/busybox", "sleep", "2147483647"]
    assert config["architecture"] == "amd64"
    assert config["os"] == "linux"
    with tarfile.open(fileobj=io.BytesIO(layer_blob)) as tar:
        member = tar.getmember("bin/busybox")
        assert member.mode == 0o755


@pytest.mark.parametrize(
    "zstd",
    [
        False,
        pytest.param(
            True, marks=pytest.mark.skipif(shutil.which("zstd") is None, reason="no zstd")
        ),
    ],
)
def test_archive_streamed_from_a_rootfs(tmp_path: Path, zstd: bool) -> None:
    root = tmp_path / "rootfs"
    (root / "opt/bertops/bin").mkdir(parents=True)
    (root / "opt/bertops/bin/bertops").write_text("#!/bin/sh\n")
    (root / "opt/bertops/bin/bertops").chmod(0o755)
    (root / "proc/1").mkdir(parents=True)  # folders' contents the runtime provides: left out
    (root / "proc/1/status").write_text("x")
    (root / "tmp").mkdir()
    (root / "tmp/leftover").write_text("x")
    (root / "bin").symlink_to("usr/bin")
    target = tmp_path / "ml.tar"
    layer = oci.write_layer(root, tmp_path / "layer.blob", zstd_level=3 if zstd else None)
    oci.write_archive(target, list(ML.tags), ML.config, [layer])
    _, config, layer_blob = check_archive(target, list(ML.tags), zstd)
    env = dict(item.split("=", 1) for item in config["config"]["Env"])
    assert env["PATH"].startswith("/opt/bertops/bin:")
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["HOME"] == "/tmp"
    assert config["config"]["User"] == "1000:1000"
    assert "Entrypoint" not in config["config"]  # the manifests' `command:` decides
    with tarfile.open(fileobj=io.BytesIO(layer_blob)) as tar:
        names = set(tar.getnames())
        assert "./opt/bertops/bin/bertops" in names
        assert tar.getmember("./bin").issym()
        assert {"./proc", "./tmp"} <= names
        assert "./proc/1" not in names
        assert "./tmp/leftover" not in names


def test_operator_image_keeps_the_deployment_entrypoint() -> None:
    deployment = Path(__file__).resolve().parents[2] / "gitops/operator/base/deployment.yaml"
    assert f"image: {OPERATOR.tags[0]}" in deployment.read_text()
    assert OPERATOR.config.entrypoint == [
        "bertops", "operator", "--runtime", "kubernetes", "--metrics-address", "0.0.0.0",
    ]  # fmt: skip


def test_ml_tags_are_the_operator_defaults() -> None:
    from bertops.operator.config import OperatorConfig

    defaults = {field.name: field.default for field in dataclasses.fields(OperatorConfig)}
    assert {defaults["image"], defaults["serving_image"]} == set(ML.tags)


def test_static_elf_check() -> None:
    assert not is_static_elf(b"#!/bin/sh\n")
    if Path("/bin/ls").is_file():
        assert not is_static_elf(Path("/bin/ls").read_bytes())  # needs ld-linux
    busybox = Path("/bin/busybox")
    if busybox.is_file() and Path("/usr/share/doc/busybox-static").exists():
        assert is_static_elf(busybox.read_bytes())


def test_debian_mirror_from_both_sources_formats(tmp_path: Path) -> None:
    deb822 = tmp_path / "debian.sources"
    deb822.write_text("Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n")
    one_line = tmp_path / "sources.list"
    one_line.write_text("deb [arch=amd64] http://other.example/debian bookworm main\n")
    assert debian_mirror([tmp_path / "missing", deb822]) == "http://mirror.example/debian"
    assert debian_mirror([one_line]) == "http://other.example/debian"
    assert debian_mirror([]) == "http://deb.debian.org/debian"


def test_cli_refuses_an_unknown_image() -> None:
    from typer.testing import CliRunner

    from bertops.cli.images import images_app

    result = CliRunner().invoke(images_app, ["build", "--only", "nope"])
    assert result.exit_code == 2
    assert "unknown image" in result.output
