"""Runs a real Argo CD against an embedded cluster, on loopback: a Debian redis-server, the
argocd repo-server and the application controller (one binary, role by
``ARGOCD_BINARY_NAME``), with Argo CD's CRDs from its module, an argocd-cm carrying our
health Lua (gitops/argocd/health) and the default AppProject. No argocd-server, UI, Dex or
ApplicationSet controller: Applications are created with the Kubernetes API.

The repo-server runs ``kustomize build``; where no ``kustomize`` binary is on the PATH a
shim runs ``kubectl kustomize`` (kustomize v5 built into kubectl).

Called by ``bertops cluster argocd up|down`` and tests/gitops/test_argocd.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bertops.cluster.apply import apply_when_served, server_side_apply
from bertops.cluster.argocd.build import crds_dir, ensure_argocd
from bertops.cluster.processes import _CHILDREN, alive, free_port, spawn, terminate

NAMESPACE = "argocd"
FIELD_MANAGER = "bertops-argocd"
KINDS = ("BertDataset", "BertTraining", "BertModel", "BertDeployment")
KUSTOMIZE_SHIM = """#!/bin/sh
# kustomize for Argo CD's repo-server, served by kubectl's built-in kustomize.
case "$1" in
  version) kubectl version --client | sed -n 's/^Kustomize Version: //p' ;;
  build) shift; exec kubectl kustomize "$@" ;;
  *) echo "kustomize shim: unsupported command $1" >&2; exit 1 ;;
esac
"""


def repo_root() -> Path:
    return Path(__file__).resolve().parents[4]


def argocd_cm(gitops: Path, reconcile_seconds: int) -> dict[str, Any]:
    """argocd-cm: our health Lua for the four kinds, annotation tracking, a short
    reconciliation period (a test waits on it)."""
    script = (gitops / "argocd" / "health" / "bertops.lua").read_text()
    data = {f"resource.customizations.health.bertops.io_{kind}": script for kind in KINDS}
    data["application.resourceTrackingMethod"] = "annotation"
    data["timeout.reconciliation"] = f"{reconcile_seconds}s"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "argocd-cm",
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/part-of": "argocd"},
        },
        "data": data,
    }


def config_objects(gitops: Path, reconcile_seconds: int) -> list[dict[str, Any]]:
    meta = {"namespace": NAMESPACE, "labels": {"app.kubernetes.io/part-of": "argocd"}}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        argocd_cm(gitops, reconcile_seconds),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "argocd-rbac-cm", **meta}},
        {
            # Made here, never in Git: only argocd-server would use the key.
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "argocd-secret", **meta},
            "stringData": {"server.secretkey": secrets.token_urlsafe(32)},
        },
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AppProject",
            "metadata": {"name": "default", "namespace": NAMESPACE},
            "spec": {
                "sourceRepos": ["*"],
                "destinations": [{"server": "*", "namespace": "*"}],
                "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
            },
        },
    ]


CLUSTER_NAME = "embedded"


def cluster_secret(kubeconfig: Path) -> dict[str, Any]:
    """The embedded cluster registered with Argo CD by its loopback URL, as `argocd cluster
    add` would: outside a pod the "in-cluster" destination has no service-account config.
    Lives only in the cluster (it holds the admin token), never in Git."""
    conf = yaml.safe_load(kubeconfig.read_text())
    cluster = conf["clusters"][0]["cluster"]
    token = conf["users"][0]["user"]["token"]
    config = {
        "bearerToken": token,
        "tlsClientConfig": {"caData": cluster["certificate-authority-data"]},
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": f"cluster-{CLUSTER_NAME}",
            "namespace": NAMESPACE,
            "labels": {"argocd.argoproj.io/secret-type": "cluster"},
        },
        "stringData": {
            "name": CLUSTER_NAME,
            "server": cluster["server"],
            "config": json.dumps(config),
        },
    }


def _wait_port(port: int, timeout: float, what: str, log: Path, pid: int = 0) -> None:
    deadline = time.monotonic() + timeout
    proc = _CHILDREN.get(pid)
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
    raise RuntimeError(f"{what} not listening on 127.0.0.1:{port} after {timeout:.0f}s:\n{tail}")


def _stop_redis(pid: int) -> None:
    """redis-server rewrites its argv (its title), so alive() cannot recognise it: stop
    its process group and wait for the child we started (or for the pid to go)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    proc = _CHILDREN.pop(pid, None)
    if proc is not None:
        proc.wait(timeout=15)
        return
    deadline = time.monotonic() + 15
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


@dataclass
class ArgoCD:
    """Argo CD processes for one embedded cluster (``kubeconfig``), state in ``directory``."""

    kubeconfig: Path
    directory: Path
    gitops: Path = field(default_factory=lambda: repo_root() / "gitops")
    reconcile_seconds: int = 5
    pids: dict[str, int] = field(default_factory=dict)

    def install(self) -> None:
        """Argo CD's CRDs (from the module), then its namespace and configuration."""
        crds = [yaml.safe_load(p.read_text()) for p in sorted(crds_dir().glob("*-crd.yaml"))]
        server_side_apply(self.kubeconfig, crds, FIELD_MANAGER)
        config = [
            *config_objects(self.gitops, self.reconcile_seconds),
            cluster_secret(self.kubeconfig),
        ]
        # The AppProject among them needs its CRD served.
        apply_when_served(self.kubeconfig, config, FIELD_MANAGER, timeout=60)

    def _path(self) -> str:
        # The repo-server runs git-verify-wrapper.sh (installed beside argocd) from PATH.
        path = f"{ensure_argocd().parent}:{os.environ.get('PATH', '')}"
        if shutil.which("kustomize") is None:
            shim_dir = self.directory / "bin"
            shim_dir.mkdir(parents=True, exist_ok=True)
            shim = shim_dir / "kustomize"
            shim.write_text(KUSTOMIZE_SHIM)
            shim.chmod(0o755)
            path = f"{shim_dir}:{path}"
        return path

    def _start(self, role: str, argv: list[str], env: dict[str, str]) -> int:
        link = self.directory / "bin" / role
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(ensure_argocd())
        pid = spawn([str(link), *argv], self.directory / f"{role}.log", env=env)
        self.pids[role] = pid
        return pid

    def up(self, timeout: float = 120.0) -> None:
        """Start everything; on any failure stop what was started, then re-raise."""
        try:
            self._up(timeout)
        except BaseException:
            self.down()
            raise

    def _up(self, timeout: float) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        redis_server = shutil.which("redis-server")
        if redis_server is None:
            raise RuntimeError("redis-server not found: apt-get install redis-server")
        ensure_argocd()
        self.install()
        redis, repo, repo_metrics, ctl_metrics = (free_port() for _ in range(4))
        redis_argv = ["--port", str(redis), "--bind", "127.0.0.1", "--save", ""]
        redis_argv += ["--appendonly", "no", "--dir", str(self.directory)]
        self.pids["redis-server"] = spawn(
            [redis_server, *redis_argv], self.directory / "redis-server.log"
        )
        _wait_port(redis, 20, "redis-server", self.directory / "redis-server.log")
        home = self.directory / "home"
        home.mkdir(exist_ok=True)
        env = {
            "PATH": self._path(),
            "HOME": str(home),
            "ARGOCD_GPG_ENABLED": "false",
            "KUBECONFIG": str(self.kubeconfig),
        }
        common = ["--redis", f"127.0.0.1:{redis}", "--loglevel", "info", "--logformat", "text"]
        repo_argv = ["--address", "127.0.0.1", "--port", str(repo)]
        repo_argv += ["--metrics-address", "127.0.0.1", "--metrics-port", str(repo_metrics)]
        repo_argv += ["--disable-tls", "--client-ca-path", ""]
        self._run_role("argocd-repo-server", [*repo_argv, *common], env, repo, timeout)
        controller_argv = [
            *("--kubeconfig", str(self.kubeconfig), "--namespace", NAMESPACE),
            *("--repo-server", f"127.0.0.1:{repo}", "--repo-server-plaintext"),
            *("--metrics-port", str(ctl_metrics), "--app-resync", str(self.reconcile_seconds)),
            *("--self-heal-timeout-seconds", "2"),
            *("--status-processors", "2", "--operation-processors", "2"),
            # Keep each resource's health in the Application's status (3.x keeps it only
            # in the resource tree by default), so kubectl and tests can read it.
            "--persist-resource-health=true",
        ]
        self._run_role(
            "argocd-application-controller", [*controller_argv, *common], env, ctl_metrics, timeout
        )
        (self.directory / "state.json").write_text(json.dumps(self.pids))

    def _run_role(
        self, role: str, argv: list[str], env: dict[str, str], port: int, timeout: float
    ) -> None:
        """Start one argocd role and wait until it listens on port."""
        self._start(role, argv, {**env, "ARGOCD_BINARY_NAME": role})
        _wait_port(port, timeout, role, self.directory / f"{role}.log", self.pids[role])

    def down(self) -> None:
        state = self.directory / "state.json"
        pids = self.pids or (json.loads(state.read_text()) if state.exists() else {})
        for role in ("argocd-application-controller", "argocd-repo-server"):
            pid = pids.get(role)
            if pid and alive(pid, role):
                terminate(pid, role, timeout=10)
        if pid := pids.get("redis-server"):
            _stop_redis(pid)
        for pid in pids.values():  # one that had already exited: collect its status
            proc = _CHILDREN.pop(pid, None)
            if proc is not None and proc.poll() is None:
                proc.kill()
            if proc is not None:
                proc.wait(timeout=10)
        self.pids = {}
        state.unlink(missing_ok=True)

    def log(self, role: str, chars: int = 4000) -> str:
        path = self.directory / f"{role}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"
