"""Leader election on a coordination.k8s.io Lease, so that of several operator replicas
(a rolling update, or more than one for availability) exactly one reconciles.

The same algorithm as client-go's leaderelection: a candidate takes the Lease when it is
free or when its holder has not renewed it for ``leaseDurationSeconds`` (measured on the
candidate's own monotonic clock from the moment it last saw the Lease change, so clocks
need not agree); every write carries the resourceVersion it read, so two candidates
never both win. The leader renews every retry period and stops acting when it could not
renew for the renew deadline (shorter than the lease duration, so it has stopped before
anyone else may take over). A leader that stops cleanly releases the Lease, and a
standby takes over within one retry period. Used by :func:`bertops.operator.run.run_operator`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from bertops.operator.config import OperatorConfig

log = logging.getLogger(__name__)
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class LeadershipLostError(RuntimeError):
    """The leader could not renew its Lease in time and stopped acting."""


def lease_namespace(config: OperatorConfig) -> str:
    """Where the Lease lives: as configured, else the first watched namespace, else the
    operator pod's own namespace, else "default"."""
    if config.lease_namespace:
        return config.lease_namespace
    if config.namespaces:
        return config.namespaces[0]
    if SERVICE_ACCOUNT_NAMESPACE.exists():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    return "default"


def _micro_time() -> str:
    # MicroTime: RFC 3339 with exactly six fractional digits.
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, api_client: client.ApiClient, config: OperatorConfig) -> None:
        # Any: we send and read raw JSON (a MicroTime needs exactly six fractional
        # digits, which the typed models' datetime serialization does not guarantee).
        self.api: Any = client.CoordinationV1Api(api_client)
        self.name = config.lease_name
        self.namespace = lease_namespace(config)
        self.duration = config.lease_duration_seconds
        self.renew_deadline = config.lease_renew_deadline_seconds
        self.retry = config.lease_retry_seconds
        self.identity = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.lost = threading.Event()
        self._observed: tuple[str, float] = ("", 0.0)  # resourceVersion, when first seen
        self._halt = threading.Event()
        self._keeper: threading.Thread | None = None

    # -- one round ---------------------------------------------------------------------

    def try_acquire_or_renew(self) -> bool:
        """Take or renew the Lease once; True when we hold it afterwards."""
        lease = self._read()
        if lease is None:
            return self._write(None, {})
        rv = lease["metadata"]["resourceVersion"]
        if rv != self._observed[0]:
            self._observed = (rv, time.monotonic())
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        duration = spec.get("leaseDurationSeconds") or self.duration
        if holder and holder != self.identity:
            if time.monotonic() < self._observed[1] + duration:
                return False  # held, and renewed recently enough
            log.info("lease %s/%s of %s expired: taking over", self.namespace, self.name, holder)
        return self._write(lease, spec)

    def _read(self) -> dict[str, Any] | None:
        try:
            response = self.api.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return dict(json.loads(response.data))

    def _write(self, lease: dict[str, Any] | None, spec: dict[str, Any]) -> bool:
        ours = spec.get("holderIdentity") == self.identity
        now = _micro_time()
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": math.ceil(self.duration),
                "acquireTime": spec.get("acquireTime") if ours else now,
                "renewTime": now,
                "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (0 if ours else 1),
            },
        }
        try:
            if lease is None:
                response = self.api.create_namespaced_lease(
                    self.namespace, body, _preload_content=False
                )
            else:
                # The resourceVersion read: a concurrent writer makes this a 409.
                body["metadata"]["resourceVersion"] = lease["metadata"]["resourceVersion"]
                response = self.api.replace_namespaced_lease(
                    self.name, self.namespace, body, _preload_content=False
                )
        except ApiException as error:
            if error.status == 409:
                return False  # someone else wrote first
            raise
        written = json.loads(response.data)
        self._observed = (str(written["metadata"]["resourceVersion"]), time.monotonic())
        if not ours:
            log.info("acquired lease %s/%s as %s", self.namespace, self.name, self.identity)
        return True

    # -- lifecycle -----------------------------------------------------------------------

    def acquire(self, stop: threading.Event) -> bool:
        """Block until we hold the Lease (True) or stop is set (False)."""
        log.info("waiting for lease %s/%s as %s", self.namespace, self.name, self.identity)
        while not stop.is_set():
            try:
                if self.try_acquire_or_renew():
                    return True
            except ApiException as error:
                log.warning("lease %s/%s: %s", self.namespace, self.name, error.reason)
            stop.wait(self.retry)
        return False

    def keep(self, stop: threading.Event, stopped: threading.Event) -> None:
        """Renew in the background; set ``stopped`` when stop is set or the Lease is lost."""

        def renew() -> None:
            renewed = time.monotonic()
            # Wakes at once on stop (tests, the CLI's flag); on _halt (kopf ended by a
            # signal, see release) within one retry period.
            while not stop.wait(self.retry) and not self._halt.is_set():
                try:
                    if self.try_acquire_or_renew():
                        renewed = time.monotonic()
                        continue
                except ApiException as error:
                    log.warning("renewing lease %s/%s: %s", self.namespace, self.name, error)
                if time.monotonic() - renewed > self.renew_deadline:
                    log.error("lost lease %s/%s: stopping", self.namespace, self.name)
                    self.lost.set()
                    break
            stopped.set()

        self._keeper = threading.Thread(target=renew, name="bertops-lease", daemon=True)
        self._keeper.start()

    def release(self) -> None:
        """Stop renewing and hand the Lease back (when still ours) so a standby takes
        over at once instead of after the lease duration."""
        self._halt.set()
        if self._keeper is not None:
            self._keeper.join(self.retry + 5)
        if self.lost.is_set():
            return
        try:
            lease = self._read()
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"].update(
                holderIdentity=None, leaseDurationSeconds=1, renewTime=_micro_time()
            )
            self.api.replace_namespaced_lease(self.name, self.namespace, lease)
            log.info("released lease %s/%s", self.namespace, self.name)
        except ApiException as error:  # it expires by itself: only slower
            log.warning("could not release lease %s/%s: %s", self.namespace, self.name, error)
