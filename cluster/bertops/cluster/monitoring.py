"""A real Prometheus (Debian's ``prometheus`` binary) beside an embedded cluster, scraping
the operator's metrics endpoint, the gateways and the model servers on loopback.

Everything lives in ``<cluster folder>/monitoring`` (0700, files 0600, see
:mod:`bertops.cluster.files`): ``prometheus.yml``, the TSDB in ``data/``,
the log, ``state.json`` (pid, port) and ``targets/<job>.json``. Targets are file_sd
files, not static config, so whoever knows a new gateway or server (the operator, the
demo, a test) calls :func:`write_targets` and Prometheus picks it up without a restart.
Prometheus listens on 127.0.0.1 on a free port; its URL is what
:class:`bertops.operator.rollout.prometheus.PrometheusSource` reads from.

Used by ``bertops cluster monitoring up|down``, ``bertops cluster up --monitoring`` and
tests/cluster/test_monitoring.py.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bertops.cluster.files import private_dir, write_private
from bertops.cluster.processes import (
    _CHILDREN,
    alive,
    free_port,
    spawn,
    terminate,
)

BINARY = "prometheus"
# job name -> the metrics path of what it scrapes; the target files are named after jobs.
JOBS: dict[str, str] = {
    "bertops-operator": "/metrics",
    "bertops-gateway": "/metrics",
    "bertops-server": "/metrics",
}


class MonitoringError(RuntimeError):
    """Prometheus could not be found or started; the message says why."""


def prometheus_config(directory: Path, scrape_seconds: float) -> dict[str, Any]:
    """prometheus.yml: one job per kind of target, each fed by its own file_sd file."""
    interval = f"{scrape_seconds:g}s"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": job,
                "metrics_path": path,
                "scrape_timeout": interval,
                "file_sd_configs": [
                    # Prometheus watches the files too; the refresh is the fallback.
                    {
                        "files": [str(directory / "targets" / f"{job}.json")],
                        "refresh_interval": "5s",
                    }
                ],
            }
            for job, path in JOBS.items()
        ],
    }


def write_targets(
    directory: Path, job: str, targets: Iterable[str], labels: Mapping[str, str] | None = None
) -> Path:
    """Replace the targets (``host:port``) of one job; Prometheus re-reads the file."""
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}; one of {sorted(JOBS)}")
    folder = private_dir(directory / "targets")
    groups = [{"targets": sorted(targets), "labels": dict(labels or {})}]
    path = folder / f"{job}.json"
    write_private(path, json.dumps(groups, indent=2))
    return path


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except (FileNotFoundError, ProcessLookupError):
        return []


@dataclass
class Monitoring:
    """The Prometheus of one cluster; ``directory`` is the cluster's folder + ``monitoring``."""

    directory: Path
    scrape_seconds: float = 5.0

    @property
    def config_file(self) -> Path:
        return self.directory / "prometheus.yml"

    @property
    def _state_file(self) -> Path:
        return self.directory / "state.json"

    def _state(self) -> dict[str, Any]:
        return json.loads(self._state_file.read_text()) if self._state_file.exists() else {}

    def _ours(self, pid: int | None) -> bool:
        """pid is a prometheus running *our* config (a recycled pid, or another
        cluster's Prometheus, is never stopped)."""
        if pid and (proc := _CHILDREN.get(int(pid))) is not None:
            return proc.poll() is None  # started by this process: Popen knows best
        return (
            bool(pid)
            and alive(pid, BINARY)
            and (f"--config.file={self.config_file}" in _cmdline(int(pid or 0)))
        )

    @property
    def url(self) -> str | None:
        state = self._state()
        return f"http://127.0.0.1:{state['port']}" if self._ours(state.get("pid")) else None

    def up(self, timeout: float = 30.0) -> str:
        """Start Prometheus (or reuse the running one); returns its URL."""
        if url := self.url:
            return url
        binary = shutil.which(BINARY)
        if binary is None:
            raise MonitoringError("prometheus not found: apt-get install prometheus")
        private_dir(self.directory)
        for job in JOBS:  # an empty file_sd file is valid; a missing one is logged as an error
            if not (self.directory / "targets" / f"{job}.json").exists():
                write_targets(self.directory, job, [])
        config = prometheus_config(self.directory, self.scrape_seconds)
        write_private(self.config_file, yaml.safe_dump(config, sort_keys=False))
        port = free_port()
        argv = [
            binary,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={private_dir(self.directory / 'data')}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=2d",
            "--log.level=warn",
        ]
        pid = spawn(argv, self.directory / "prometheus.log")
        write_private(self._state_file, json.dumps({"pid": pid, "port": port}))
        try:
            self._wait_ready(pid, port, timeout)
        except BaseException:
            self.down()
            raise
        return f"http://127.0.0.1:{port}"

    def _wait_ready(self, pid: int, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and alive(pid, BINARY):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        log = self.directory / "prometheus.log"
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
        raise MonitoringError(f"prometheus not ready on 127.0.0.1:{port}:\n{tail}")

    def down(self, timeout: float = 15.0) -> bool:
        """Stop this cluster's Prometheus; whether it was running. Data stays on disk."""
        pid = int(self._state().get("pid") or 0)
        running = self._ours(pid)
        if running:
            terminate(pid, BINARY, timeout)
        elif (proc := _CHILDREN.pop(pid, None)) is not None:
            proc.wait(timeout=timeout)  # ours, already exited: leave no zombie
        self._state_file.unlink(missing_ok=True)
        return running
