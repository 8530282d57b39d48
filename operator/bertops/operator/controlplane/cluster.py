"""A named embedded cluster: etcd + kube-apiserver processes on loopback ports, a data
folder with certificates, a static admin token and a kubeconfig, and the bertops CRDs.

Each cluster lives in ``$BERTOPS_HOME/clusters/<name>`` (default ``~/.bertops``), so two
clusters run side by side. ``up`` is idempotent (a running cluster is reused), ``down``
stops both processes and waits until they are gone. There is no kubelet, scheduler or
controller-manager: objects are stored and validated for real, nothing runs pods.

Used by ``bertops cluster up|down|status|env``, the demo and the pytest fixture.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bertops.operator.controlplane import certs
from bertops.operator.controlplane.build import Binaries, ensure_binaries

Progress = Callable[[str], None]

# Children started by this process, kept so they are reaped (not left as zombies) and so
# Popen's destructor does not warn about a still-running process we meant to keep.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class ClusterError(RuntimeError):
    """The control plane could not be started or reached; the message says why."""


def home() -> Path:
    return Path(os.environ.get("BERTOPS_HOME", Path.home() / ".bertops"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _alive(pid: int | None, binary_name: str) -> bool:
    """True when pid runs binary_name (guards against a recycled pid)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        status = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return status != "Z" and Path(cmdline).name == binary_name


@dataclass
class ClusterState:
    name: str
    server: str = ""
    etcd_url: str = ""
    etcd_pid: int | None = None
    apiserver_pid: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    started_at: float | None = None


@dataclass
class Cluster:
    """Handle on one named embedded cluster; cheap to construct."""

    name: str = "default"
    progress: Progress = field(default=lambda message: None, repr=False)

    @property
    def directory(self) -> Path:
        return home() / "clusters" / self.name

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def _state_file(self) -> Path:
        return self.directory / "cluster.json"

    def state(self) -> ClusterState:
        if not self._state_file.exists():
            return ClusterState(name=self.name)
        return ClusterState(**json.loads(self._state_file.read_text()))

    def _save(self, state: ClusterState) -> None:
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        tmp.replace(self._state_file)

    # -- queries -------------------------------------------------------------------------

    def running(self) -> bool:
        state = self.state()
        return _alive(state.etcd_pid, "etcd") and _alive(state.apiserver_pid, "kube-apiserver")

    def token(self) -> str:
        return (self.directory / "token").read_text().strip()

    def ready(self, timeout: float = 2.0) -> bool:
        """The API server answers /readyz with ok."""
        state = self.state()
        if not state.server:
            return False
        context = ssl.create_default_context(cafile=str(self.directory / "pki" / "ca.crt"))
        request = urllib.request.Request(
            f"{state.server}/readyz", headers={"Authorization": f"Bearer {self.token()}"}
        )
        try:
            with urllib.request.urlopen(request, context=context, timeout=timeout) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def status(self) -> dict[str, Any]:
        state = self.state()
        return {
            "name": self.name,
            "running": self.running(),
            "ready": self.ready() if self.running() else False,
            "server": state.server,
            "kubeconfig": str(self.kubeconfig),
            "etcd_pid": state.etcd_pid,
            "apiserver_pid": state.apiserver_pid,
            "versions": state.versions,
            "directory": str(self.directory),
        }

    def env(self) -> dict[str, str]:
        return {"KUBECONFIG": str(self.kubeconfig)}

    # -- lifecycle -----------------------------------------------------------------------

    def up(
        self, binaries: Binaries | None = None, *, install_crds: bool = True, timeout: float = 90.0
    ) -> ClusterState:
        """Start the cluster (or reuse it when already running) and install the CRDs."""
        if self.running() and self.ready():
            self.progress(f"cluster {self.name!r} already running at {self.state().server}")
            if install_crds:
                self.install_crds()
            return self.state()
        self.down(quiet=True)
        binaries = binaries or ensure_binaries(self.progress)
        started = time.monotonic()
        self.directory.mkdir(parents=True, exist_ok=True)
        pki = self.directory / "pki"
        if not (pki / "ca.crt").exists():
            certs.generate(pki)
        token_file = self.directory / "token"
        if not token_file.exists():
            token_file.write_text(secrets.token_hex(24))
            token_file.chmod(0o600)
        token = self.token()
        (self.directory / "tokens.csv").write_text(f'{token},bertops-admin,1,"system:masters"\n')

        etcd_port, peer_port, api_port = _free_port(), _free_port(), _free_port()
        state = ClusterState(
            name=self.name,
            server=f"https://127.0.0.1:{api_port}",
            etcd_url=f"http://127.0.0.1:{etcd_port}",
            versions=binaries.versions,
            started_at=time.time(),
        )
        state.etcd_pid = self._spawn(
            "etcd",
            [
                str(binaries.etcd),
                "--name=default",
                f"--data-dir={self.directory / 'etcd'}",
                f"--listen-client-urls={state.etcd_url}",
                f"--advertise-client-urls={state.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",  # a throwaway dev/test store: speed over durability
                "--log-level=warn",
            ],
        )
        self._save(state)
        state.apiserver_pid = self._spawn(
            "kube-apiserver",
            [
                str(binaries.kube_apiserver),
                f"--etcd-servers={state.etcd_url}",
                f"--etcd-prefix=/registry-{self.name}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'server.crt'}",
                f"--tls-private-key-file={pki / 'server.key'}",
                f"--token-auth-file={self.directory / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                # No controller-manager mints service-account tokens here.
                "--disable-admission-plugins=ServiceAccount",
                "--allow-privileged=true",
                "--v=1",
            ],
        )
        self._save(state)
        self._write_kubeconfig(state.server, token)
        self._wait_ready(timeout)
        self.progress(
            f"cluster {self.name!r} ready at {state.server} in {time.monotonic() - started:.1f}s"
        )
        if install_crds:
            try:
                self.install_crds()
            except Exception:
                self.down(quiet=True)  # never leave a half-set-up cluster running
                raise
        return state

    def _spawn(self, name: str, argv: list[str]) -> int:
        log = (self.directory / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the CLI that started it; `down` stops it
        )
        log.close()
        _CHILDREN[proc.pid] = proc
        return proc.pid

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return
            state = self.state()
            for name, pid in (("etcd", state.etcd_pid), ("kube-apiserver", state.apiserver_pid)):
                if not _alive(pid, name):
                    tail = self._log_tail(name)
                    self.down(quiet=True)
                    raise ClusterError(f"{name} exited during start-up; last log lines:\n{tail}")
            time.sleep(0.25)
        tail = self._log_tail("kube-apiserver")
        self.down(quiet=True)
        raise ClusterError(
            f"kube-apiserver not ready after {timeout:.0f}s; last log lines:\n{tail}"
        )

    def _log_tail(self, name: str, lines: int = 20) -> str:
        path = self.directory / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _write_kubeconfig(self, server: str, token: str) -> None:
        ca = (self.directory / "pki" / "ca.crt").read_bytes()
        import base64

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": f"bertops-{self.name}",
                    "cluster": {
                        "server": server,
                        "certificate-authority-data": base64.b64encode(ca).decode(),
                    },
                }
            ],
            "users": [{"name": "bertops-admin", "user": {"token": token}}],
            "contexts": [
                {
                    "name": f"bertops-{self.name}",
                    "context": {
                        "cluster": f"bertops-{self.name}",
                        "user": "bertops-admin",
                        "namespace": "default",
                    },
                }
            ],
            "current-context": f"bertops-{self.name}",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
        self.kubeconfig.chmod(0o600)

    def install_crds(self, timeout: float = 30.0) -> None:
        """Server-side apply the generated CRDs and wait until they are Established."""
        from bertops.operator.controlplane.crds import install

        install(str(self.kubeconfig), timeout=timeout)
        self.progress("bertops CRDs installed and established")

    def down(self, *, quiet: bool = False, purge: bool = False, timeout: float = 20.0) -> bool:
        """Stop both processes (apiserver first) and wait until they are gone.

        Returns whether anything was running. With purge, delete the data folder too.
        """
        state = self.state()
        was_running = False
        for name, pid in (("kube-apiserver", state.apiserver_pid), ("etcd", state.etcd_pid)):
            if _alive(pid, name):
                was_running = True
                _terminate(pid, name, timeout)  # type: ignore[arg-type]
        if state.etcd_pid or state.apiserver_pid:
            state.etcd_pid = state.apiserver_pid = None
            self._save(state)
        if purge and self.directory.exists():
            import shutil

            shutil.rmtree(self.directory)
        if was_running and not quiet:
            self.progress(f"cluster {self.name!r} stopped")
        return was_running


def _terminate(pid: int, name: str, timeout: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid, name):
            _reap(pid)
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while _alive(pid, name):
        time.sleep(0.05)
    _reap(pid)


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our child (no zombie left)."""
    proc = _CHILDREN.pop(pid, None)
    if proc is not None:
        proc.wait(timeout=5)
