"""Runs the embedded cluster's S3 server: VersityGW's posix backend on 127.0.0.1, keeping
buckets as folders of ``<cluster>/storage/data`` (metadata in a sidecar folder, so no
extended attributes are needed), with a root access key generated once and kept in
``<cluster>/storage/credentials.json`` (mode 0600). The key reaches the server through its
environment, never its command line.

:meth:`Storage.up` starts it (or finds it running) and creates the artifact bucket;
:meth:`Storage.client_env` is what a client needs (the ``AWS_*`` variables that botocore,
and so s3fs, read). Called by ``bertops cluster storage up|down``, ``bertops cluster down``
and the S3 test fixtures.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertops.cluster.files import private_dir, write_private
from bertops.cluster.processes import alive, exit_status, free_port, spawn, terminate
from bertops.cluster.storage.build import ensure_versitygw

BUCKET = "bertops"
REGION = "us-east-1"
BINARY = "versitygw"


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str


@dataclass
class Storage:
    """The S3 server of one embedded cluster, its state in ``directory``."""

    directory: Path

    @property
    def _state_path(self) -> Path:
        return self.directory / "state.json"

    @property
    def log_path(self) -> Path:
        return self.directory / "versitygw.log"

    def credentials(self) -> Credentials:
        """The root key, generated on first use (20 + 40 characters, as AWS keys)."""
        path = self.directory / "credentials.json"
        if not path.exists():
            private_dir(self.directory)
            key = Credentials("BERTOPS" + secrets.token_hex(7).upper(), secrets.token_urlsafe(30))
            write_private(
                path, json.dumps({"accessKey": key.access_key, "secretKey": key.secret_key})
            )
        data = json.loads(path.read_text())
        return Credentials(data["accessKey"], data["secretKey"])

    def _state(self) -> dict[str, Any]:
        if not self._state_path.exists():
            return {}
        state: dict[str, Any] = json.loads(self._state_path.read_text())
        return state

    @property
    def endpoint(self) -> str | None:
        """``http://127.0.0.1:<port>`` while the server runs, else None."""
        state = self._state()
        if not alive(state.get("pid"), BINARY):
            return None
        return f"http://127.0.0.1:{state['port']}"

    def up(self, timeout: float = 30.0) -> str:
        """Start the server unless it runs, create the artifact bucket; the endpoint."""
        if (running := self.endpoint) is not None:
            return running
        binary = ensure_versitygw()
        key = self.credentials()
        data = private_dir(self.directory / "data")
        sidecar = private_dir(self.directory / "meta")
        iam = private_dir(self.directory / "iam")  # tenant accounts (storage.tenants)
        port = self._port()
        argv = [str(binary), "--port", f"127.0.0.1:{port}", "--region", REGION]
        argv += ["--iam-dir", str(iam)]
        argv += ["posix", "--sidecar", str(sidecar), str(data)]
        env = {"ROOT_ACCESS_KEY_ID": key.access_key, "ROOT_SECRET_ACCESS_KEY": key.secret_key}
        pid = spawn(argv, self.log_path, env=env)
        write_private(self._state_path, json.dumps({"pid": pid, "port": port}))
        self._wait_listening(pid, port, timeout)
        endpoint = f"http://127.0.0.1:{port}"
        make_bucket(endpoint, key, BUCKET)
        return endpoint

    def _port(self) -> int:
        """The port this server had before (clients keep its endpoint across a restart),
        else a free one, remembered."""
        path = self.directory / "port"
        if not path.exists():
            write_private(path, str(free_port()))
        return int(path.read_text())

    def _wait_listening(self, pid: int, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not alive(pid, BINARY):
                raise RuntimeError(f"versitygw exited ({exit_status(pid)}):\n{self._log_tail()}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"versitygw not listening on 127.0.0.1:{port}:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def down(self, timeout: float = 10.0) -> None:
        pid = self._state().get("pid")
        if pid is not None and alive(pid, BINARY):
            terminate(int(pid), BINARY, timeout)
        self._state_path.unlink(missing_ok=True)

    def client_env(self) -> dict[str, str]:
        """What an S3 client of this server needs: botocore (so s3fs) reads these."""
        endpoint = self.endpoint
        if endpoint is None:
            raise RuntimeError("the S3 server is not running: `bertops cluster storage up`")
        key = self.credentials()
        return {
            "AWS_ACCESS_KEY_ID": key.access_key,
            "AWS_SECRET_ACCESS_KEY": key.secret_key,
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,  # botocore reads this one
        }


def make_bucket(endpoint: str, key: Credentials, bucket: str) -> None:
    """Create ``bucket`` unless it exists (boto3's client, the one s3fs drives)."""
    import botocore.session

    session = botocore.session.get_session()
    client = session.create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=key.access_key,
        aws_secret_access_key=key.secret_key,
    )
    try:
        client.create_bucket(Bucket=bucket)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    finally:
        client.close()
