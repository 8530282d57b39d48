"""The embedded S3 server (VersityGW built from its Go module) and model publication on
it: the key stays private, a wrong key is refused without being echoed, and a publication
killed halfway leaves nothing a reader trusts while the retry publishes a whole model."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import s3fs

from bertops.api.artifacts import MODEL_MANIFEST, ArtifactError, ModelManifest, verify_manifest
from bertops.cluster.storage.run import BUCKET, Storage
from bertops.modelio.publish import sweep_stale_temps
from bertops.operator.artifacts import read_model_artifact
from bertops.server.artifact import resolve_uri
from tests.s3 import needs_s3
from tests.server.artifacts import write_tiny_artifact

pytestmark = needs_s3

# Publishes a folder with bertops.modelio.publish.publish_remote, killing itself (SIGKILL,
# no clean-up runs) when the filesystem method named by argv[3] is called more than
# argv[4] times: the upload phase (put_file) or the copy into place (copy).
PUBLISHER = """
import os, signal, sys
from pathlib import Path
from typing import Any
from fsspec.core import url_to_fs
from bertops.modelio.publish import publish_remote

source, uri, method, allowed = sys.argv[1:]
fs, path = url_to_fs(uri)
original = getattr(fs, method)
calls = []

def dying(*args, **kwargs):
    calls.append(args)
    if len(calls) > int(allowed):
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)

setattr(fs, method, dying)
publish_remote(fs, Path(source), path, "bertops-model.json")
"""


def _publish(source: Path, uri: str, method: str = "put_file", allowed: int = 10**6) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", PUBLISHER, str(source), uri, method, str(allowed)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr[-2000:]
    return proc.returncode


def test_the_key_is_generated_private_and_never_on_the_command_line(s3_store: Storage) -> None:
    path = s3_store.directory / "credentials.json"
    assert path.stat().st_mode & 0o777 == 0o600
    key = s3_store.credentials()
    assert len(key.access_key) == 21 and len(key.secret_key) >= 40
    pid = int(__import__("json").loads((s3_store.directory / "state.json").read_text())["pid"])
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    assert "versitygw" in cmdline and key.secret_key not in cmdline
    assert key.access_key not in cmdline


def test_a_wrong_key_is_refused_and_not_echoed(
    s3_store: Storage, s3_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-" + s3_env["AWS_SECRET_ACCESS_KEY"][::-1]
    fs = s3fs.S3FileSystem(
        key=s3_env["AWS_ACCESS_KEY_ID"],
        secret=wrong,
        endpoint_url=s3_env["AWS_ENDPOINT_URL_S3"],
        skip_instance_cache=True,
    )
    with pytest.raises(PermissionError) as refused:
        fs.ls(BUCKET)
    assert wrong not in str(refused.value)
    # The operator, with the wrong key in its environment: the model is "not readable
    # yet", said in its log without the secret.
    os.environ["AWS_SECRET_ACCESS_KEY"] = wrong  # s3_env's monkeypatch restores it
    with caplog.at_level(logging.WARNING, logger="bertops.operator.artifacts"):
        uri = f"s3://{BUCKET}/refused/models/m/g1"
        s3fs.S3FileSystem.clear_instance_cache()
        assert read_model_artifact(uri) is None
    assert "cannot read bertops-model.json from s3://bertops/refused" in caplog.text
    assert wrong not in caplog.text
    s3fs.S3FileSystem.clear_instance_cache()


def test_a_killed_upload_publishes_nothing_and_the_retry_a_whole_model(
    s3_env: dict[str, str], tmp_path: Path
) -> None:
    source = write_tiny_artifact(tmp_path / "model")
    uri = f"s3://{BUCKET}/ns-{tmp_path.name}/models/tiny/g1"
    fs = s3fs.S3FileSystem(skip_instance_cache=True)

    # Killed while uploading (3 of the files sent): nothing at the target at all.
    assert _publish(source, uri, "put_file", 3) == -signal.SIGKILL
    assert not fs.exists(uri)
    assert read_model_artifact(uri) is None  # the operator waits; no Ready from it
    # The retry publishes the whole model, the manifest written last. The killed one's
    # temporary prefix is fresh (it might be a live upload): kept, and readers skip it.
    assert _publish(source, uri) == 0
    parent = uri.removeprefix("s3://").rpartition("/")[0]
    left = [p for p in fs.ls(parent, refresh=True) if ".g1.tmp-" in p]
    assert len(left) == 1
    time.sleep(1.1)  # S3 keeps whole seconds
    # Once stale, the next publication of the target deletes it.
    assert sweep_stale_temps(fs, uri.removeprefix("s3://"), stale_seconds=0.5) == 1
    assert not [p for p in fs.ls(parent, refresh=True) if ".g1.tmp-" in p]
    info = read_model_artifact(uri)
    assert info is not None and info.problems == [] and info.manifest is not None
    fetched = resolve_uri(uri, tmp_path / "cache")  # what a model server does
    manifest, sha256 = verify_manifest(fetched, ModelManifest, MODEL_MANIFEST, what="model")
    assert sha256 == info.manifest_sha256 and len(manifest.files) == len(info.manifest.files)

    # Republishing over it, killed after the old manifest came down and while the new
    # files are copied into place: readers find no manifest (so no Ready, and no server
    # loads a mix of old and new files) until the retry completes.
    changed = write_tiny_artifact(tmp_path / "model-2", seed=1)
    assert _publish(changed, uri, "copy", 1) == -signal.SIGKILL
    assert fs.exists(uri) and not fs.exists(f"{uri}/{MODEL_MANIFEST}")
    assert read_model_artifact(uri) is None
    assert _publish(changed, uri) == 0
    again = read_model_artifact(uri)
    assert again is not None and again.problems == []
    assert again.manifest_sha256 != info.manifest_sha256


def test_the_credentials_are_handed_to_the_cluster_as_a_secret(
    s3_store: Storage, kube: Any, cluster: Any
) -> None:
    from kubernetes import client

    from bertops.cluster.storage.cluster_objects import NAME, hand_over

    env = s3_store.client_env()
    namespace = f"s3-{os.getpid()}"
    hand_over(cluster.kubeconfig, namespace, env)
    core = client.CoreV1Api(kube)
    secret = core.read_namespaced_secret(NAME, namespace).data
    assert secret is not None
    assert set(secret) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    config = core.read_namespaced_config_map(NAME, namespace).data
    assert config is not None
    assert config["AWS_ENDPOINT_URL_S3"] == env["AWS_ENDPOINT_URL_S3"]
    assert env["AWS_SECRET_ACCESS_KEY"] not in str(config)
    hand_over(cluster.kubeconfig, namespace, env)  # again: applied, not duplicated
    core.delete_namespace(namespace)


def test_storage_env_says_when_no_server_runs(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from bertops.cli.main import app

    runner = CliRunner()
    result = runner.invoke(
        app, ["cluster", "storage", "env", "--name", "absent"], env={"BERTOPS_HOME": str(tmp_path)}
    )
    assert result.exit_code == 1
    assert "the S3 server is not running: `bertops cluster storage up`" in result.output


def test_models_download_fetches_from_s3_and_verifies_every_file(
    s3_env: dict[str, str], tmp_path: Path
) -> None:
    from bertops.ui import artifacts

    source = write_tiny_artifact(tmp_path / "model")
    uri = f"s3://{BUCKET}/ui-{tmp_path.name}/models/tiny/g1"
    assert _publish(source, uri) == 0
    info = read_model_artifact(uri)
    assert info is not None
    model = {"status": {"artifactUri": uri, "manifestSha256": info.manifest_sha256}}

    copy = artifacts.download(model, tmp_path / "copy")
    assert copy.manifest_sha256 == info.manifest_sha256
    assert sorted(p.name for p in copy.folder.iterdir()) == sorted(p.name for p in source.iterdir())
    assert artifacts.plots_data(model)["unavailable"] is None

    # A weight changed in the bucket after registration: refused, nothing left behind.
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.pipe_file(f"{uri}/model.safetensors", b"tampered")
    with pytest.raises(ArtifactError, match="fails verification"):
        artifacts.download(model, tmp_path / "copy-2")
    assert not (tmp_path / "copy-2").exists()


def test_the_demo_report_reads_a_models_training_history_from_s3(
    s3_env: dict[str, str], tmp_path: Path
) -> None:
    from bertops.cluster.demo_report import training_history

    uri = f"s3://{BUCKET}/demo-{tmp_path.name}/default/models/m/g1"
    history = [{"epoch": 1, "loss": 0.9}, {"epoch": 2, "loss": 0.5}]
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.pipe_file(
        f"{uri.removeprefix('s3://')}/metrics.json", json.dumps({"history": history}).encode()
    )
    assert training_history(uri) == history
    assert training_history(f"{uri}-missing") == []
