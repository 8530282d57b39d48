"""Benchmark of the operator at scale (not a test): N BertDatasets applied at once to the
embedded API server, reconciled by ``bertops operator --runtime local`` in its own
process, with a stub prepare step (``benchmarks/stub_step.py``) that finishes at once, so
what is measured is the operator, not torch. Run by hand or by whoever sizes issue #16's
scale work; a few minutes at the default sizes:

    .venv/bin/python benchmarks/operator_bench.py [--sizes 100,300,1000] [--window 60]
        [--kubeconfig FILE]  # reuse a running cluster; default: start one, stop it after

Per size N (a fresh namespace, a fresh operator with its own state dir, default leader
election on, metrics on loopback; objects created with ``--concurrency`` threads):

- objects to first status per second: N / (apply start -> the last object's first
  status with conditions), timestamped by a watch, not by polling each object;
- apply -> first child p50/p95: from an object's create call to its status.step (the
  watch) and to its step process's pid file in the operator's state dir;
- API requests per settled object per minute: ``apiserver_request_total`` from the API
  server's /metrics before and after ``--window`` seconds once all are Ready, in which
  the benchmark sends nothing; net of the API server's own idle rate (measured first,
  with no operator) and of its own /metrics read, with a breakdown by verb and resource;
- apply -> status.step p50/p95 paced: once the N objects are settled (and their window
  counted), ``--paced`` more are created one at a time at ``--paced-rate`` per second.
  A burst's p50 is mostly its queue (half the burst over the service rate, for any
  controller); this is the latency of one user's apply on a cluster holding N objects;
- CPU per object from the first create to the last Ready (/proc): the whole machine,
  and split into the operator, its step processes, the API server with etcd, and this
  benchmark; on a CPU-bound machine objects/s is about the cores over the total;
- operator RSS (/proc/<pid>/status VmRSS) idle and settled, growth per object within a
  size and between sizes; the load average before and after each size.

Each size ends with its objects deleted, timed until all are gone (the operator's
finalizer stops and removes each one's steps), the operator stopped and its state dir
removed. The table sets the figures beside the anchors and the goals of issue #16.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from statistics import median, quantiles
from typing import Any

from kubernetes import client

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Sibling scripts, not a package: found through the path entry above.
from operator_bench_kube import (
    Counts,
    OperatorProcess,
    Seen,
    Series,
    Watcher,
    api_client,
    apply_all,
    cluster_kubeconfig,
    cpu_seconds,
    delete_all,
    machine_busy_seconds,
    processes_with,
    settled_requests,
)
from stub_step import prepare_result

FINAL = {"Prepared", "InvalidData", "StepFailed", "InvalidSpec", "ResultUnreadable"}
ANCHOR_RATE = "kopf ~3.3/s (300 in 90 s, users' reports); tuned controller-runtime ~52/s"


def check_stub() -> None:
    """The stub's document parses as a successful prepare StepResult with details."""
    from bertops.api.steps import PrepareDetails, StepResult

    spec = {"name": "x-prep-g1", "outputUri": "/tmp/x", "dataset": {"labels": ["a", "b"]}}
    result = StepResult.model_validate(prepare_result(spec, datetime.now(UTC)))
    assert result.succeeded and isinstance(result.details, PrepareDetails), result
    assert result.details.rows and result.details.checksum and result.details.labels


def pct(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return quantiles(values, n=100, method="inclusive")[q - 1]


def wait_settled(watcher: Watcher, names: list[str], timeout: float) -> float:
    """Until every object's Ready condition has a final reason (read from the watch's
    records, no API request); the time the last one got there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(watcher.seen.reasons.get(name) in FINAL for name in names):
            break
        time.sleep(0.2)
    else:
        done = sum(watcher.seen.reasons.get(name) in FINAL for name in names)
        raise RuntimeError(f"only {done}/{len(names)} settled after {timeout:.0f}s")
    ready = watcher.seen.ready
    return max(ready.get(name, 0.0) for name in names)


def pid_latencies(
    state_dir: Path, namespace: str, seen: Seen, began: dict[str, float]
) -> list[float]:
    """apply -> the step's pid file (written right after the process started)."""
    out = []
    for name, step in seen.step_names.items():
        pid = state_dir / "steps" / namespace / step / "pid"
        if pid.exists():
            out.append(pid.stat().st_mtime - began[name])
    return out


def paced_latencies(
    api: client.ApiClient, namespace: str, source: str, args: argparse.Namespace
) -> list[float]:
    """apply -> status.step for ``args.paced`` objects created one at a time, evenly
    spaced at ``args.paced_rate`` per second, while the namespace's others sit settled."""
    if args.paced <= 0:
        return []
    watcher = Watcher(api, namespace)
    names = [f"paced-{i:04d}" for i in range(args.paced)]
    began: dict[str, float] = {}
    start = time.monotonic()
    for i, name in enumerate(names):
        time.sleep(max(0.0, start + i / args.paced_rate - time.monotonic()))
        began.update(apply_all(api, namespace, [name], source, 1))
    deadline = time.monotonic() + args.timeout
    while not all(name in watcher.seen.step for name in names):
        if time.monotonic() > deadline:
            raise RuntimeError(f"paced objects without status.step after {args.timeout:.0f}s")
        time.sleep(0.2)
    watcher.stop()
    return [watcher.seen.step[name] - began[name] for name in names]


def cpu_snapshot(operator_pid: int, cluster_pids: list[int]) -> dict[str, float]:
    """CPU seconds so far: the operator's own threads, its reaped step processes, the
    API server and etcd, this benchmark (its creates and watch), the whole machine."""
    own, steps = cpu_seconds(operator_pid)
    return {
        "operator": own,
        "steps": steps,
        "cluster": sum(cpu_seconds(pid)[0] for pid in cluster_pids),
        "bench": time.process_time(),
        "machine": machine_busy_seconds(),
    }


def run_size(
    api: client.ApiClient, kubeconfig: str, n: int, args: argparse.Namespace, root: Path
) -> dict[str, Any]:
    workdir = root / f"n{n}"
    workdir.mkdir()
    namespace = f"bench-{n}-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata={"name": namespace}))
    load_before = os.getloadavg()
    operator = OperatorProcess(kubeconfig, namespace, workdir, args.poll, args.leader_elect)
    try:
        operator.wait_ready()
        rss_idle = operator.rss_kib()
        cluster_pids = [
            pid for pid in processes_with(str(Path(kubeconfig).parent)) if pid != operator.proc.pid
        ]
        cpu_before = cpu_snapshot(operator.proc.pid, cluster_pids)
        watcher = Watcher(api, namespace)
        names = [f"ds-{i:05d}" for i in range(n)]
        source = str(workdir / "artifacts" / "sources" / "tweets.csv")
        start = time.time()
        began = apply_all(api, namespace, names, source, args.concurrency)
        applied = time.time() - start
        last_ready = wait_settled(watcher, names, args.timeout)
        cpu_after = cpu_snapshot(operator.proc.pid, cluster_pids)
        watcher.stop()
        seen = watcher.seen
        time.sleep(2.0)  # the watch's last request ends; in-flight writes land
        raw, net = settled_requests(api, args.window, args.idle_rate)
        rss_settled = operator.rss_kib()
        pid_lat = pid_latencies(operator.state_dir, namespace, seen, began)
        paced = paced_latencies(api, namespace, source, args)
        deleting = time.monotonic()
        delete_all(api, namespace, args.concurrency, args.timeout)
        deleted = time.monotonic() - deleting
    except Exception:
        print(operator.tail(), file=sys.stderr)
        raise
    finally:
        operator.stop()
        shutil.rmtree(operator.state_dir, ignore_errors=True)
    # No namespace controller on the embedded cluster: it stays Terminating, empty.
    core.delete_namespace(namespace)
    step_lat = [seen.step[name] - began[name] for name in names if name in seen.step]
    minutes = args.window / 60
    return {
        "n": n,
        "apply_seconds": applied,
        "first_status_rate": n / (max(seen.status[name] for name in names) - start),
        "settle_seconds": last_ready - start if last_ready else float("nan"),
        "not_prepared": sum(seen.reasons.get(name) != "Prepared" for name in names),
        "child_p50": median(step_lat),
        "child_p95": pct(step_lat, 95),
        "paced_p50": median(paced) if paced else float("nan"),
        "paced_p95": pct(paced, 95),
        "pid_p50": median(pid_lat) if pid_lat else float("nan"),
        "pid_p95": pct(pid_lat, 95),
        "requests_raw": sum(raw.values()) / n / minutes,
        "requests": sum(net.values()) / n / minutes,
        "requests_no_lease": sum(v for k, v in net.items() if k[2] != "leases") / n / minutes,
        "breakdown": {_series(key): v / n / minutes for key, v in list(net.items())[:8]},
        "delete_seconds": deleted,
        **{f"cpu_{k}": (cpu_after[k] - cpu_before[k]) * 1000 / n for k in cpu_before},
        "cluster_processes": len(cluster_pids),
        "rss_idle_mib": rss_idle / 1024,
        "rss_settled_mib": rss_settled / 1024,
        "rss_kib_per_object": (rss_settled - rss_idle) / n,
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }


def _series(key: Series) -> str:
    verb, group, resource = key
    return f"{verb} {group + '/' if group else ''}{resource or '(non-resource)'}"


def idle_rate(api: client.ApiClient, seconds: float) -> Counts:
    """The API server's own requests per second with no operator and no benchmark."""
    raw, _ = settled_requests(api, seconds, None)
    print(f"API server idle: {sum(raw.values()) / seconds * 60:.0f} requests/min")
    return {key: value / seconds for key, value in raw.items()}


# (label, result key, digits, goal, anchor or note); digits None: the value is text.
ROWS: list[tuple[str, str, int | None, str, str]] = [
    ("objects to first status /s", "first_status_rate", 2, ">= 20", ANCHOR_RATE),
    ("apply (create calls) s", "apply_seconds", 2, "", ""),
    ("apply -> all Ready s", "settle_seconds", 2, "", "the poller notices a finished step"),
    ("not Prepared", "not_prepared", 0, "0", ""),
    ("apply -> status.step p50 s", "child_p50", 2, "<= 1", "from the create call"),
    ("apply -> status.step p95 s", "child_p95", 2, "", ""),
    ("  paced apply -> status.step p50 s", "paced_p50", 2, "<= 1", "one at a time, N settled"),
    ("  paced apply -> status.step p95 s", "paced_p95", 2, "", ""),
    ("apply -> step pid file p50 s", "pid_p50", 2, "<= 1", "process started"),
    ("apply -> step pid file p95 s", "pid_p95", 2, "", ""),
    ("API req/settled obj/min (net)", "requests", 3, "<= 1", "API server idle subtracted"),
    ("  the same without the Lease", "requests_no_lease", 3, "<= 1", "Lease: per operator"),
    ("  raw", "requests_raw", 3, "", "everything the API server counted"),
    ("CPU ms/object, apply->all Ready", "cpu_machine", 1, "", "whole machine, all processes"),
    ("  the operator", "cpu_operator", 1, "", "its own threads"),
    ("  its step processes", "cpu_steps", 1, "", "the stub (bash + python), reaped"),
    ("  API server + etcd", "cpu_cluster", 1, "", ""),
    ("  this benchmark", "cpu_bench", 1, "", "its creates and its watch"),
    ("delete all -> all gone s", "delete_seconds", 2, "", "finalizer: steps stopped, removed"),
    ("operator RSS idle MiB", "rss_idle_mib", 1, "", "before the first apply"),
    ("operator RSS settled MiB", "rss_settled_mib", 1, "", ""),
    ("RSS growth KiB/object (in size)", "rss_kib_per_object", 1, "~linear", "(settled-idle)/N"),
    ("RSS growth KiB/object (vs prev)", "rss_kib_vs_previous", 1, "~linear", "between sizes"),
    ("load avg 1m before/after", "load", None, "", f"{os.cpu_count()} CPUs"),
]


def _cell(value: Any, digits: int | None) -> str:
    if digits is None or isinstance(value, str):
        return str(value)
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    for r in results:
        r["load"] = f"{r['load_before'][0]:.2f}/{r['load_after'][0]:.2f}"
        r.setdefault("rss_kib_vs_previous", "-")
    for a, b in pairwise(results):
        b["rss_kib_vs_previous"] = (
            (b["rss_settled_mib"] - a["rss_settled_mib"]) * 1024 / (b["n"] - a["n"])
        )
    label_width = max(len(row[0]) for row in ROWS)
    print(f"\n{'metric':<{label_width}}", *(f"{'N=' + str(r['n']):>10}" for r in results), end="")
    print(f"  {'goal':<8}  anchor / note")
    for label, key, digits, goal, note in ROWS:
        cells = (f"{_cell(r[key], digits):>10}" for r in results)
        print(f"{label:<{label_width}}", *cells, f" {goal:<8}  {note}")
    print(
        f"\nsettled window {args.window:.0f} s, operator --poll {args.poll} s, leader election "
        f"{'on' if args.leader_elect else 'off'}, create concurrency {args.concurrency}, "
        f"paced: {args.paced} objects at {args.paced_rate:g}/s"
    )
    for r in results:
        print(f"\nN={r['n']}: API requests / settled object / minute by verb, resource (net)")
        width = max((len(series) for series in r["breakdown"]), default=0)
        for series, value in r["breakdown"].items():
            print(f"  {series:<{width}}  {value:8.3f}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", default="100,300,1000", help="Comma-separated N.")
    parser.add_argument("--window", type=float, default=60.0, help="Settled seconds counted.")
    parser.add_argument("--idle-window", type=float, default=30.0, help="API server alone.")
    parser.add_argument("--poll", type=float, default=2.0, help="The operator's --poll.")
    parser.add_argument("--concurrency", type=int, default=8, help="Parallel create calls.")
    parser.add_argument("--timeout", type=float, default=900.0, help="Per size, to settle.")
    parser.add_argument("--paced", type=int, default=40, help="Objects applied one by one.")
    parser.add_argument("--paced-rate", type=float, default=4.0, help="Their creates per s.")
    parser.add_argument("--kubeconfig", help="A running cluster (default: start one).")
    parser.add_argument(
        "--no-leader-elect",
        dest="leader_elect",
        action="store_false",
        help="Run the operator without its Lease (default: with, as deployed).",
    )
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    check_stub()
    root = Path(tempfile.mkdtemp(prefix="operator-bench-"))
    results = []
    try:
        with cluster_kubeconfig(args.kubeconfig, root) as kubeconfig:
            api = api_client(kubeconfig, args.concurrency + 2)
            args.idle_rate = idle_rate(api, args.idle_window)
            for n in sizes:
                print(f"N={n}: load {os.getloadavg()[0]:.2f}", flush=True)
                results.append(run_size(api, kubeconfig, n, args, root))
                r = results[-1]
                print(
                    f"  {r['first_status_rate']:.1f} objects/s to first status, "
                    f"settled in {r['settle_seconds']:.1f} s",
                    flush=True,
                )
            api.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
