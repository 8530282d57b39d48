"""A named embedded cluster: etcd + kube-apiserver processes on loopback ports, a data
folder with certificates, a static admin token and a kubeconfig, and the bertops CRDs.

The folder is 0700 and every secret in it 0600 from creation on (:mod:`.files`). etcd
serves only TLS and requires a client certificate from its own CA, which only
kube-apiserver holds (:func:`.certs.generate_etcd`); its peer port is TLS-only too.

Each cluster lives in ``$BERTOPS_HOME/clusters/<name>`` (default ``~/.bertops``), so two
clusters run side by side. ``up`` is idempotent (a running cluster is reused), ``down``
stops the local runtime's processes recorded in its folder (the demo's steps and serving
processes) and the node when there is one, then both processes, and waits until they are
gone. Without ``node=True`` there is no kubelet, scheduler or controller-manager: objects
are stored and validated for real, nothing runs pods; with it, :mod:`bertops.cluster.node`
adds a real node.

Used by ``bertops cluster up|down|status|env``, the demo and the pytest fixture.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bertops.cluster.controlplane.argv import apiserver_argv, etcd_argv
from bertops.cluster.controlplane.build import Binaries, ensure_binaries
from bertops.cluster.files import private_dir, write_private
from bertops.cluster.processes import (
    alive,
    exit_status,
    free_port,
    spawn,
    terminate,
)
from bertops.cluster.teardown import Teardown

Progress = Callable[[str], None]


NODE_TOKENS_FILE = "node-tokens.json"


class ClusterError(RuntimeError):
    """The control plane could not be started or reached; the message says why."""


def home() -> Path:
    return Path(os.environ.get("BERTOPS_HOME", Path.home() / ".bertops"))


@dataclass
class ClusterState:
    name: str
    server: str = ""
    etcd_url: str = ""
    etcd_pid: int | None = None
    apiserver_pid: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    started_at: float | None = None
    # With a node (bertops.cluster.node): pods run, so service accounts are admitted.
    node: bool = False


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
        write_private(self._state_file, json.dumps(asdict(state), indent=2))

    # -- queries -------------------------------------------------------------------------

    def running(self) -> bool:
        state = self.state()
        return alive(state.etcd_pid, "etcd") and alive(state.apiserver_pid, "kube-apiserver")

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
        self,
        binaries: Binaries | None = None,
        *,
        install_crds: bool = True,
        timeout: float = 90.0,
        node: bool = False,
    ) -> ClusterState:
        """Start the cluster (or reuse it when already running) and install the CRDs; with
        node, also a real node (kubelet, containerd, controllers, DNS) that runs pods."""
        if self.running() and self.ready() and self.state().node == node:
            self.progress(f"cluster {self.name!r} already running at {self.state().server}")
            if install_crds:
                self.install_crds()
            if node:
                self._start_node()
            return self.state()
        self.down(quiet=True)
        binaries = binaries or ensure_binaries(self.progress)
        started = time.monotonic()
        token = self._write_secrets(node)
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        state = ClusterState(
            name=self.name,
            server=f"https://127.0.0.1:{api_port}",
            etcd_url=f"https://127.0.0.1:{etcd_port}",
            versions=binaries.versions,
            started_at=time.time(),
            node=node,
        )
        state.etcd_pid = spawn(
            etcd_argv(binaries.etcd, self.directory, state.etcd_url, peer_port),
            self.directory / "etcd.log",
        )
        self._save(state)
        state.apiserver_pid = spawn(
            apiserver_argv(binaries.kube_apiserver, self.directory, state, api_port),
            self.directory / "kube-apiserver.log",
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
        if node:
            self._start_node()
        return state

    def _start_node(self) -> None:
        from bertops.cluster.node.start import start_node

        try:
            api_port = int(self.state().server.rsplit(":", 1)[1])
            start_node(self.directory, self.name, api_port, self.node_tokens(), self.progress)
        except BaseException:
            self.down(quiet=True)
            raise

    def _write_secrets(self, node: bool = False) -> str:
        """Create the private folder, both PKIs and the token where missing, and (re)write
        tokens.csv; return the admin token. ca.crt is written last by both generators, so
        its presence means the set is complete; a set from before the kubelet client
        certificate existed is made again. With a node, each node component gets a token
        of its own (:mod:`bertops.cluster.node.identity`), and the API server's egress
        configuration names the node's relay."""
        # Imported here: cryptography comes with the operator extra, and `cluster status`,
        # `down`, `env` and `build` work in a core install without it.
        from bertops.cluster.controlplane import certs
        from bertops.cluster.controlplane.argv import EGRESS_SELECTOR_FILE
        from bertops.cluster.node import configs, identity

        private_dir(self.directory)
        pki = private_dir(self.directory / "pki")
        if not (pki / "ca.crt").exists() or not (pki / f"{certs.KUBELET_CLIENT}.crt").exists():
            certs.generate(pki, (configs.KUBERNETES_SERVICE_IP, configs.NODE_IP))
        if not (pki / "etcd" / "ca.crt").exists():
            certs.generate_etcd(pki / "etcd")
        token_file = self.directory / "token"
        if not token_file.exists():
            write_private(token_file, secrets.token_hex(24))
        token = self.token()
        lines = f'{token},bertops-admin,1,"system:masters"\n'
        if node:
            tokens = self.node_tokens() or identity.new_tokens()
            write_private(self.directory / NODE_TOKENS_FILE, json.dumps(tokens, indent=2))
            lines += identity.token_lines(tokens, self.name)
            layout = configs.NodeLayout(self.directory, self.name)
            write_private(
                self.directory / EGRESS_SELECTOR_FILE,
                configs.egress_selector_config(layout.egress_socket),
            )
        write_private(self.directory / "tokens.csv", lines)
        return token

    def node_tokens(self) -> dict[str, str]:
        """The node components' tokens by component (empty before a node first started)."""
        path = self.directory / NODE_TOKENS_FILE
        return json.loads(path.read_text()) if path.exists() else {}

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return
            state = self.state()
            for name, pid in (("etcd", state.etcd_pid), ("kube-apiserver", state.apiserver_pid)):
                if not alive(pid, name):
                    tail = self._log_tail(name)
                    how = exit_status(pid)
                    self.down(quiet=True)
                    raise ClusterError(
                        f"{name} exited during start-up{f' ({how})' if how else ''}; "
                        f"last log lines:\n{tail}"
                    )
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
        write_private(self.kubeconfig, yaml.safe_dump(config, sort_keys=False))

    def install_crds(self, timeout: float = 30.0) -> None:
        """Server-side apply the generated CRDs and wait until they are Established."""
        from bertops.cluster.controlplane.crds import install

        install(str(self.kubeconfig), timeout=timeout)
        self.progress("bertops CRDs installed and established")

    def down(self, *, quiet: bool = False, purge: bool = False, timeout: float = 20.0) -> bool:
        """Stop the local runtime's processes, the node, then both processes (apiserver
        first) and wait until they are gone. Every stage runs even when one before it
        failed; the failures are raised together at the end (:class:`DownError`).

        Returns whether anything was running. With purge, delete the data folder too
        (never while anything is still mounted below it).
        """
        teardown = Teardown()
        was_running = bool(teardown.run("local runtime", lambda: self.stop_local_runtime(timeout)))
        if (self.directory / "node").is_dir():
            # The node first: its kubelet and controllers talk to the API server.
            from bertops.cluster.node.node import Node

            node = Node(self.directory, self.name, self.progress)
            was_running |= bool(teardown.run("node", lambda: node.down(quiet=quiet)))
        was_running |= bool(teardown.run("control plane", lambda: self._stop_processes(timeout)))
        if purge and self.directory.exists():
            teardown.run("purge", self._purge)
        if was_running and not quiet:
            self.progress(f"cluster {self.name!r} stopped")
        teardown.finish()
        return was_running

    def _stop_processes(self, timeout: float) -> bool:
        state = self.state()
        was_running = False
        for name, pid in (("kube-apiserver", state.apiserver_pid), ("etcd", state.etcd_pid)):
            if alive(pid, name):
                was_running = True
                terminate(pid, name, timeout)  # type: ignore[arg-type]
        if state.etcd_pid or state.apiserver_pid:
            state.etcd_pid = state.apiserver_pid = None
            self._save(state)
        return was_running

    def _purge(self) -> None:
        import shutil

        from bertops.cluster.mounts import mounts_under

        left = mounts_under(self.directory)
        if left:  # rmtree would descend into them and delete what they show
            raise ClusterError(f"not deleting {self.directory}: still mounted {left}")
        shutil.rmtree(self.directory)

    @property
    def runtime_state_dir(self) -> Path:
        """The local runtime's state dir of an operator this cluster runs (the demo's)."""
        return self.directory / "demo" / "state"

    def stop_local_runtime(self, timeout: float = 10.0) -> bool:
        """Stop the local runtime's steps and serving processes recorded in this
        cluster's runtime state dir (the demo's operator): they outlive the operator on
        purpose, so nothing else would ever stop them. Identity-checked by pid and start
        time, as the operator does. Only that folder is walked: the rest of the cluster's
        folder holds the node's containerd state, which changes while down runs. Whether
        any ran."""
        from bertops.operator.runtime.local import stop_recorded

        stopped = stop_recorded(self.runtime_state_dir, timeout)
        for folder in stopped:
            self.progress(f"stopped {folder.relative_to(self.directory)}")
        return bool(stopped)
