"""Local serving of a BertDeployment (local runtime): one ``bertops server serve``
process per model version in play and one ``bertops server gateway`` per deployment, on
free loopback ports (:mod:`.processes`).

Each :meth:`LocalServing.ensure` moves one safe step towards the target, in an order
that never drops a request:

1. start: a server for every model the target names (an existing one is adopted);
2. wait ready: a server enters the routes only once ``/v2/health/ready`` answers 200 (until
   then the routes keep what served before: a new stable replaces the old one only once
   it is ready, a canary gets its weight only then);
3. shift: the routes are applied through the gateway's loopback admin endpoint (bearer
   token kept in the gateway's folder, mode 0600), then the routes file (what a
   restarted gateway reads) is rewritten atomically; the gateway gives each request one
   routes snapshot;
4. drain: a server the applied routes no longer name is marked retired and left running
   for ``serving_drain_seconds`` (requests that picked it just before the shift finish);
5. stop: then SIGTERM (the server drains what is still in flight and exits).

Servers are named after the model version, not the role, so a promotion only rewrites
the routes: the canary's process becomes stable's without a restart. A running server
is never restarted for a change of ``spec.serving`` (batching, limits): only a new model
version starts a new one. Called by
:mod:`bertops.operator.deployment.reconciler`.

Each server appends its prediction log to ``<predictions_uri>/<server>.jsonl`` and,
while ``spec.retrain`` keeps feedback, the gateway its labelled feedback to
``<feedback_uri>/feedback.jsonl`` (:mod:`.target`): the folders a drift check and a
retraining read, as on Kubernetes. With the artifact root in an object store the servers
keep these logs in a local spool and ship them there every few seconds
(``bertops.server.logship``), the store's credentials in the environment they inherit.
The gateway's flags are fixed when it starts; the feedback credentials Secret
(``serving.feedback.credentialsSecret``) is copied into its folder on every pass, and the
gateway re-reads it, so a client is added or revoked live.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
import shutil
import time
from pathlib import Path

import httpx

from bertops.api.artifacts import local_path
from bertops.api.deployment import BertDeploymentSpec
from bertops.api.routes import Backend, Routes, Sticky
from bertops.api.server_command import server_args
from bertops.operator.config import OperatorConfig
from bertops.operator.deployment.gateway_manifests import feedback_access_flags
from bertops.operator.deployment.processes import (
    ServingProcess,
    executable,
    free_port,
    write_atomically,
)
from bertops.operator.deployment.server_manifests import ModelVersion, keeps_feedback, server_name
from bertops.operator.deployment.target import Served, Target, feedback_uri, predictions_uri
from bertops.operator.kube import Kube
from bertops.operator.objects import ObjectRef

log = logging.getLogger(__name__)
GATEWAY = "gateway"
ROUTES_FILE = "routes.json"
CREDENTIALS = "feedback-credentials"
KEY = re.compile(r"[-._a-zA-Z0-9]+")  # a Secret's key: a safe file name, never a path
TOKEN_FILE = "admin-token"
MAX_RESTARTS = 3  # a server that keeps dying (e.g. a refused artifact) is left down


class LocalServing:
    def __init__(self, config: OperatorConfig, kube: Kube | None = None) -> None:
        self.config = config
        self.kube = kube  # reads the feedback credentials Secret (as a kubelet would)
        self.root = config.state_dir / "serving"

    # -- folders -------------------------------------------------------------------------

    def _home(self, owner: ObjectRef) -> Path:
        """The deployment's folder; one left by a deleted namesake (another UID) is
        cleared first, so a re-created deployment never adopts its predecessor's servers."""
        home = self.root / owner.namespace / owner.name
        owner_file = home / "owner"
        if owner_file.exists() and owner_file.read_text().strip() != owner.uid:
            self._stop_all(home)
        home.mkdir(parents=True, exist_ok=True)
        if not owner_file.exists():
            write_atomically(owner_file, owner.uid)
        return home

    def _servers(self, home: Path) -> dict[str, ServingProcess]:
        return {
            p.name: ServingProcess(p)
            for p in sorted(home.iterdir())
            if p.is_dir() and p.name != GATEWAY
        }

    # -- the steps -----------------------------------------------------------------------

    def ensure(self, owner: ObjectRef, spec: BertDeploymentSpec, target: Target) -> Served:
        home = self._home(owner)
        problems: list[str] = []
        servers = self._servers(home)
        ready: dict[str, str] = {}  # model -> URL of its ready server
        for model in target.models:
            process = servers.get(server_name(owner.name, model.name)) or ServingProcess(
                home / server_name(owner.name, model.name)
            )
            process.unretire()  # wanted again (e.g. a rollback to a model being drained)
            problem = self._keep_running(process, self._server_command(owner, spec, model))
            if problem:
                problems.append(problem)
            elif process.healthy("/v2/health/ready"):
                ready[model.name] = process.url()
        gateway = ServingProcess(home / GATEWAY)
        current = self._routes_in_force(home)
        table = self._next_routes(owner, target, ready, current)
        if table is None:
            return Served(None, None, settled=False, problems=problems)
        self._sync_credentials(owner, spec, home)
        if not gateway.alive():
            self._start_gateway(home, gateway, table, self._gateway_flags(owner, spec, home))
            current = table
        if not gateway.healthy("/readyz"):
            return Served(None, None, settled=False, problems=problems)
        if current is None or _key(current) != _key(table):
            if not self._shift(home, gateway, table):
                return Served(gateway.url(), current, settled=False, problems=problems)
            current = table
        drained = self._drain(home, current, target)
        settled = drained and all(m.name in ready for m in target.models) and not problems
        metrics = gateway.url("metrics")
        return Served(gateway.url(), current, settled, (metrics + "/metrics",), problems, metrics)

    def observe(self, owner: ObjectRef) -> Served:
        home = self.root / owner.namespace / owner.name
        gateway = ServingProcess(home / GATEWAY)
        if not gateway.alive():
            return Served(None, None, settled=False)
        routes = self._routes_in_force(home)
        metrics = gateway.url("metrics")
        return Served(gateway.url(), routes, True, (metrics + "/metrics",), [], metrics)

    def _keep_running(self, process: ServingProcess, command: list[str]) -> str | None:
        """Start (or restart a dead) process; a problem once it died too often."""
        if process.alive():
            return None
        restarts_file = process.folder.parent / f".{process.name}.restarts"
        restarts = int(restarts_file.read_text()) if restarts_file.exists() else 0
        if process.started:
            failure = process.failure() or f"{process.name} vanished"
            if restarts >= MAX_RESTARTS:
                return failure
            log.warning("restarting %s: %s", process.name, failure)
            write_atomically(restarts_file, str(restarts + 1))
        port = free_port()
        process.start([*command, "--port", str(port)], {"http": port})
        return None

    @staticmethod
    def _log_file(folder_uri: str, name: str) -> str:
        """A log file in an artifact-store folder: a local path, or a URI in an object
        store, which the server spools locally and ships there (bertops.server.logship)."""
        folder = local_path(folder_uri)
        return str(folder / name) if folder is not None else f"{folder_uri.rstrip('/')}/{name}"

    def _server_command(
        self, owner: ObjectRef, spec: BertDeploymentSpec, model: ModelVersion
    ) -> list[str]:
        serving = spec.serving
        command = [
            *executable(self.config.serve_command), "serve", "--host", "127.0.0.1",
            # One thread a local server: the canary and stable share this machine's cores.
            *server_args(
                serving,
                model_uri=model.artifact_uri,
                manifest_sha256=model.manifest_sha256,
                name=model.name,
                threads=1,
            ),
        ]  # fmt: skip
        if serving.prediction_log != "off":
            folder = predictions_uri(self.config, owner.namespace, owner.name)
            # Named after the server (one process per model version): one writer a file.
            path = self._log_file(folder, f"{server_name(owner.name, model.name)}.jsonl")
            command += ["--prediction-log-path", path]  # the server creates the folder
        return command

    def _gateway_flags(self, owner: ObjectRef, spec: BertDeploymentSpec, home: Path) -> list[str]:
        """Who may send feedback, and ``--feedback-log`` while the retrain policy keeps
        labelled feedback."""
        flags = feedback_access_flags(spec.serving.feedback, str(home / CREDENTIALS))
        if not keeps_feedback(spec):
            return flags
        folder = feedback_uri(self.config, owner.namespace, owner.name)
        return [*flags, "--feedback-log", self._log_file(folder, "feedback.jsonl")]

    def _sync_credentials(self, owner: ObjectRef, spec: BertDeploymentSpec, home: Path) -> None:
        """Copy the feedback credentials Secret into the gateway's folder (mode 0700, files
        0600), as a kubelet updates a mounted Secret: the gateway re-reads the folder. No
        Secret named, or none found: the folder is empty and every credential is refused."""
        name = spec.serving.feedback.credentials_secret
        found = (
            self.kube.read("v1", "Secret", owner.namespace, name) if name and self.kube else None
        )
        if name and found is None:
            log.warning("%s/%s: feedback Secret %s not found", owner.namespace, owner.name, name)
        wanted = {
            key: base64.b64decode(value).decode("utf-8", errors="replace")
            for key, value in ((found or {}).get("data") or {}).items()
            if KEY.fullmatch(key)
        }
        folder = home / CREDENTIALS
        folder.mkdir(mode=0o700, exist_ok=True)
        for path in folder.iterdir():
            if path.name not in wanted:
                path.unlink()
        for key, token in wanted.items():
            path = folder / key
            if not path.exists() or path.read_text() != token:
                write_atomically(path, token, mode=0o600)

    def _next_routes(
        self, owner: ObjectRef, target: Target, ready: dict[str, str], current: Routes | None
    ) -> Routes | None:
        """The routes to apply now: the target's stable once its server is ready (else
        the stable in force), its canary once ready (else none). None: nothing can serve."""
        if target.stable.name in ready:
            stable = _backend(target.stable, ready[target.stable.name])
        elif current is not None:
            stable = current.stable
        else:
            return None
        canary = target.canary if target.canary and target.canary.name in ready else None
        if canary is not None and canary.name == stable.name:
            canary = None
        candidate = _backend(canary, ready[canary.name]) if canary else None
        table = Routes(
            stable=stable,
            canary=None if target.shadow else candidate,
            canary_weight=target.weight if canary and not target.shadow else 0,
            shadow=candidate if target.shadow else None,
            sticky=Sticky(mode=target.sticky),
            compare=target.compare and canary is not None and not target.shadow,
        )
        return table.model_copy(update={"revision": _key(table)[:12]})

    # -- gateway -------------------------------------------------------------------------

    def _start_gateway(
        self, home: Path, gateway: ServingProcess, table: Routes, flags: list[str]
    ) -> None:
        token = secrets.token_urlsafe(24)
        port, admin, metrics = free_port(), free_port(), free_port()
        command = [
            *executable(self.config.serve_command), "gateway",
            "--routes", str(home / ROUTES_FILE),
            "--host", "127.0.0.1", "--port", str(port),
            "--admin-port", str(admin),
            "--metrics-port", str(metrics),
            "--poll-seconds", "1",
            *flags,
        ]  # fmt: skip
        self._write_routes(home, table)
        # The token goes by environment (not argv, which every user can read in ps).
        gateway.start(
            command,
            {"http": port, "admin": admin, "metrics": metrics},
            {"BERTOPS_GATEWAY_ADMIN_TOKEN": token},
        )
        write_atomically(gateway.folder / TOKEN_FILE, token, mode=0o600)

    def _write_routes(self, home: Path, table: Routes) -> None:
        write_atomically(home / ROUTES_FILE, json.dumps(table.to_wire(), indent=2, sort_keys=True))

    def _routes_in_force(self, home: Path) -> Routes | None:
        """The routes last applied (written only once the gateway took them)."""
        try:
            return Routes.model_validate_json((home / ROUTES_FILE).read_text())
        except (OSError, ValueError):
            return None

    def _shift(self, home: Path, gateway: ServingProcess, table: Routes) -> bool:
        """Apply the table through the admin endpoint, then keep it as the routes file
        (the gateway polls the file too, so it is written only once applied: a file
        ahead of the gateway would let a retired server be stopped too early)."""
        token = (gateway.folder / TOKEN_FILE).read_text().strip()
        try:
            answer = httpx.put(
                gateway.url("admin") + "/admin/routes",
                content=json.dumps(table.to_wire()),
                headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
                timeout=5.0,
            )
            answer.raise_for_status()
        except httpx.HTTPError as error:
            log.warning("could not change the routes of %s: %s", home, error)
            return False
        self._write_routes(home, table)
        log.info("routes of %s now: %s", home.name, _describe(table))
        return True

    # -- drain and stop ------------------------------------------------------------------

    def _drain(self, home: Path, routes: Routes, target: Target) -> bool:
        """Stop the servers neither routed nor wanted, after the drain period; True
        when nothing is left to wait for."""
        keep = {b.name for b in (routes.stable, routes.canary) if b is not None}
        keep |= {m.name for m in target.models}
        settled = True
        for name, process in self._servers(home).items():
            if any(server_name(home.name, model) == name for model in keep):
                continue
            settled = False
            retired_at = process.retire()
            if (
                time.time() - retired_at >= self.config.serving_drain_seconds
                and process.terminate()
            ):
                (home / f".{name}.restarts").unlink(missing_ok=True)
                log.info("stopped retired server %s", name)
        return settled

    def cleanup(self, namespace: str, name: str, uid: str) -> list[str]:
        home = self.root / namespace / name
        owner_file = home / "owner"
        if not owner_file.exists() or owner_file.read_text().strip() != uid:
            return []
        return self._stop_all(home)

    def _stop_all(self, home: Path) -> list[str]:
        stopped = []
        for child in sorted(home.iterdir()) if home.exists() else []:
            if child.is_dir():
                ServingProcess(child).kill_now()
                stopped.append(child.name)
        shutil.rmtree(home, ignore_errors=True)
        return stopped


def _backend(model: ModelVersion, url: str) -> Backend:
    return Backend(name=model.name, url=url, model=model.name, labels=list(model.labels) or None)


def _key(table: Routes) -> str:
    """A digest of what routes traffic (the revision itself left out)."""
    wire = table.model_copy(update={"revision": None}).to_wire()
    return hashlib.sha256(json.dumps(wire, sort_keys=True).encode()).hexdigest()


def _describe(table: Routes) -> str:
    canary = f", canary {table.canary.name} at {table.canary_weight:g}%" if table.canary else ""
    return f"stable {table.stable.name}{canary}"
