"""``bertops demo --node`` (``make demo-node``): the closed loop of ``make demo`` from Git
to pods, on the embedded cluster's real node.

A local Git repository (:mod:`bertops.cluster.gitops_repo`) holds this checkout's
gitops/ tree plus two overlays for this machine: the operator's node overlay (CRDs,
RBAC, the operator Deployment with the kubernetes runtime, 2 replicas and leader
election) and the sentiment app (its base with the demo's sizes and timings,
:mod:`bertops.cluster.demo_node_app`). Argo CD, built from its Go module, syncs both
Applications; from then on the operator *pod* does everything: the prepare Job, the
2-pod DDP training, the compression Job, the server and gateway Deployments, the
reference and drift Jobs, the retraining and the canary. The demo only sends traffic
(to the gateway Service, from inside the node's network namespace), deletes the leading
operator pod while the canary runs, and at the end commits a change to Git that Argo CD
syncs and the operator acts on. The timeline is ``make demo``'s, each line ending with
the Applications' state; the report is the same.

Called by ``bertops demo --node``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from bertops.cluster import demo_deploy, demo_loop, demo_node_app
from bertops.cluster.argocd.run import ArgoCD
from bertops.cluster.controlplane import Cluster
from bertops.cluster.demo import models_settled, say, wanted_models
from bertops.cluster.demo_data import write_datasets
from bertops.cluster.demo_node_app import APP_NS, OPERATOR_NS
from bertops.cluster.demo_timeline import Kubectl, Timeline
from bertops.cluster.demo_traffic import Gateway
from bertops.cluster.gitops_repo import LocalRepo
from bertops.cluster.node.netns import netns_name

NAME = "demo-node"
APPS = ("bertops-operator", "bertops-sentiment")
STEP_UID = 1000  # the pods' user (restricted security context): it owns the artifacts


class Phases:
    """Wall-clock time of each phase, for the closing summary."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.marks: list[tuple[str, float]] = []
        self._last = self.started

    def done(self, phase: str) -> None:
        now = time.monotonic()
        self.marks.append((phase, now - self._last))
        self._last = now

    def summary(self) -> str:
        parts = [f"{phase} {seconds:.0f}s" for phase, seconds in self.marks]
        return ", ".join(parts) + f"; total {time.monotonic() - self.started:.0f}s"


def kubectl_for(cluster: Cluster, namespace: str) -> Kubectl:
    def run(*args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            ["kubectl", "-n", namespace, *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            env=dict(os.environ, KUBECONFIG=str(cluster.kubeconfig)),
        )
        if result.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    return run


def app_states(kubectl: Kubectl) -> dict[str, dict[str, Any]]:
    """Each Application's sync status, health, synced revision and number of syncs."""
    text = kubectl("get", "applications", "-o", "json")
    states = {}
    for app in json.loads(text).get("items", []):
        status = app.get("status") or {}
        states[app["metadata"]["name"]] = {
            "sync": (status.get("sync") or {}).get("status", "?"),
            "health": (status.get("health") or {}).get("status", "?"),
            "revision": ((status.get("sync") or {}).get("revision") or "")[:7],
            "syncs": len(status.get("history") or []),
        }
    return states


def describe_apps(states: dict[str, dict[str, Any]]) -> str:
    return "argocd: " + ", ".join(
        f"{name.removeprefix('bertops-')} {s['sync']}/{s['health']}@{s['revision']}"
        for name, s in sorted(states.items())
    )


def prepare_artifacts(home: Path, per_label: int) -> tuple[Path, Any]:
    """The node's artifact folder, owned by the pods' user, with the demo's CSVs where
    the app's dataset URI points (the data is on the artifact store)."""
    artifacts = home / "artifacts"
    data = write_datasets(artifacts / APP_NS / "data", train_per_label=per_label)
    shutil.copy(data.original, artifacts / APP_NS / "data" / "sentiment.csv")
    for path in [artifacts, *artifacts.rglob("*")]:
        os.chown(path, STEP_UID, STEP_UID)
    return artifacts, data


def leader_pod(argo_kubectl: Kubectl) -> str:
    """The operator pod holding the Lease ("" before one does)."""
    text = argo_kubectl(
        "get", "lease", "bertops-operator", "-n", OPERATOR_NS, "-o", "json", "--ignore-not-found"
    )
    holder = (json.loads(text).get("spec") or {}).get("holderIdentity", "") if text else ""
    selector = "app.kubernetes.io/name=bertops-operator"
    listed = argo_kubectl("get", "pods", "-n", OPERATOR_NS, "-l", selector, "-o", "json")
    names = [p["metadata"]["name"] for p in json.loads(listed).get("items", [])]
    return next((name for name in names if holder.startswith(name)), "")


def run(per_label: int = 300, epochs: int = 2, timeout: float = 1800) -> int:
    phases = Phases()
    cluster = Cluster(NAME, progress=say)
    home = cluster.directory / "demo"
    argo = ArgoCD(kubeconfig=cluster.kubeconfig, directory=cluster.directory / "argocd")
    say("1/9 a fresh embedded cluster with its real node (kubelet, containerd, kube-proxy)")
    argo.down()
    cluster.down(purge=True, quiet=True)
    cluster.up(node=True)
    phases.done("cluster")
    artifacts, data = prepare_artifacts(home, per_label)
    say(f"2/9 wrote {3 * per_label} labelled airline tweets to {artifacts / APP_NS / 'data'}")
    say("3/9 starting Argo CD (repo-server, application controller) beside the cluster")
    argo.up()
    repo = LocalRepo.create(home / "git")
    demo_node_app.write(repo, artifacts, epochs)
    revision = repo.commit("node overlays: the operator and the sentiment app")
    say(f"4/9 Git: {repo.path} at {revision[:7]}; creating Applications {', '.join(APPS)}")
    admin = kubectl_for(cluster, "argocd")
    # The feedback clients' Secret is made by hand (never from Git) before Argo CD syncs,
    # so the gateway pods mount it from their start.
    demo_node_app.feedback_secret(kubectl_for(cluster, APP_NS))
    admin("apply", "-f", "-", stdin=demo_node_app.argocd_objects(repo.url))
    phases.done("argocd")
    kubectl = kubectl_for(cluster, APP_NS)
    timeline = Timeline(
        kubectl,
        demo_loop.NAME,
        say=lambda line: print(f"  {line}", flush=True),
        side=lambda: describe_apps(app_states(admin)),
    )
    code = _stages(cluster, home, data, artifacts, repo, kubectl, admin, timeline, phases, timeout)
    say(f"phases: {phases.summary()}")
    say(
        f"the cluster and Argo CD stay up: export KUBECONFIG={cluster.kubeconfig}; "
        "stop both with `make demo-node-down`"
    )
    return code


def _stages(
    cluster: Cluster,
    home: Path,
    data: Any,
    artifacts: Path,
    repo: LocalRepo,
    kubectl: Kubectl,
    admin: Kubectl,
    timeline: Timeline,
    phases: Phases,
    timeout: float,
) -> int:
    started = phases.started
    say(
        "5/9 timeline: Argo CD syncs -> the operator pod: prepare -> DDP training (2 pods) "
        "-> register -> compress"
    )
    wanted = wanted_models(demo_node_app.example_docs())
    failed: list[tuple[str, str, str]] = []
    if not timeline.watch(lambda: models_settled(kubectl, wanted, failed), timeout=timeout):
        say(f"timed out after {timeout:.0f}s; operator: {operator_log_hint()}")
        return 1
    if failed:
        say(f"a step failed: {failed[0][1]}: {failed[0][2]}; operator: {operator_log_hint()}")
        return 1
    phases.done("train+compress")
    print("\n$ kubectl get bertops -n " + APP_NS + "\n" + kubectl("get", "bertops"))
    token = demo_node_app.labeler_token(kubectl)
    gateway = Gateway(demo_node_app.gateway_address(kubectl), netns_name(cluster.name), token)
    deployed = demo_deploy.run_stage(
        cluster, kubectl, say, operator_log_hint(), 300, lambda _: gateway, APP_NS
    )
    if deployed != 0:
        return deployed
    phases.done("serve")
    generations = demo_node_app.generations(kubectl)
    fault = LeaderFault(kubectl, admin)
    fault.start()
    loop = demo_loop.run_loop(
        kubectl,
        gateway,
        data,
        home,
        say,
        started,
        timeline,
        local_path=lambda uri: artifacts / uri.removeprefix("/artifacts/"),
    )
    fault.stop()
    phases.done("drift+retrain+canary")
    if loop.failure:
        say(f"the closed loop did not finish: {loop.failure}; operator: {operator_log_hint()}")
        return 1
    for name, accuracy in loop.accuracy.items():
        say(f"accuracy on the shifted evaluation set, {name}: {accuracy:.3f}")
    changed = git_change(repo, kubectl, admin, timeline)
    phases.done("git change")
    _summary(cluster, kubectl, admin, generations, fault, loop)
    return 0 if changed else 1


class LeaderFault:
    """Deletes the leading operator pod once a canary rolls out: the standby takes the
    Lease and finishes the rollout; the demo's traffic keeps going through the gateway."""

    def __init__(self, kubectl: Kubectl, admin: Kubectl) -> None:
        self.kubectl, self.admin = kubectl, admin
        self.deleted = ""
        self.successor = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-fault", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(2):
            if demo_loop.status(self.kubectl).get("canaryModel"):
                break
        else:
            return
        self.deleted = leader_pod(self.admin)
        if not self.deleted:
            return
        say(f"   fault: deleting the leading operator pod {self.deleted} mid-rollout")
        self.admin("delete", "pod", self.deleted, "-n", OPERATOR_NS, "--wait=false")
        while not self._stop.wait(1):
            holder = leader_pod(self.admin)
            if holder and holder != self.deleted:
                self.successor = holder
                say(f"   fault: {holder} now holds the Lease and carries on")
                return


def git_change(repo: LocalRepo, kubectl: Kubectl, admin: Kubectl, timeline: Timeline) -> bool:
    """Commit a change to the app (two server replicas): Argo CD syncs it, the operator
    pod scales the stable model's server. The timeline shows both."""
    say("and then a change through Git: spec.serving.replicas 1 -> 2 in the app overlay")
    revision = repo.edit(
        demo_node_app.APP_KUSTOMIZATION,
        demo_node_app.set_replicas(2),
        "sentiment: two server replicas",
    )
    say(f"   committed {revision[:7]}; Argo CD syncs it, the operator pod scales the server")
    # What a Git host's webhook does on a push: ask for a refresh now rather than at the
    # next poll of the repository.
    admin("annotate", "application", "bertops-sentiment", "argocd.argoproj.io/refresh=normal")

    def acted() -> bool:
        state = app_states(admin).get("bertops-sentiment", {})
        body = demo_loop.deployment(kubectl)
        stable = (body.get("status") or {}).get("stableModel") or ""
        server = demo_node_app.server_replicas(kubectl, stable)
        return revision.startswith(state.get("revision") or "-") and server == 2

    done = timeline.watch(acted, timeout=180)
    say("   synced and scaled: 2 server replicas ready" if done else "   not acted on in 180s")
    return done


def operator_log_hint() -> str:
    return f"kubectl logs -n {OPERATOR_NS} deploy/bertops-operator"


def _summary(
    cluster: Cluster,
    kubectl: Kubectl,
    admin: Kubectl,
    generations: dict[str, int],
    fault: LeaderFault,
    loop: Any,
) -> None:
    after = demo_node_app.generations(kubectl)
    states = app_states(admin)
    sent = [r for r in loop.records if r.phase == "rollout"]
    failed = [r for r in sent if r.status != 200]
    print("\n$ kubectl get bertops -n " + APP_NS + "\n" + kubectl("get", "bertops"))
    print(
        f"$ bertops rollout status {demo_loop.NAME}\n{demo_deploy.rollout_status(cluster, APP_NS)}"
    )
    leader = leader_pod(admin)
    if leader:
        log = admin("logs", "-n", OPERATOR_NS, leader, "--tail=15")
        print(f"\n$ kubectl logs -n {OPERATOR_NS} {leader} --tail=15\n{log}")
    say(f"traffic during the rollout: {len(sent)} requests, {len(failed)} failed")
    say(f"leader fault: deleted {fault.deleted or '-'}, successor {fault.successor or '-'}")
    say(
        f"user objects' generations: before {generations}, after {after} (the Git change "
        "is the only spec write)"
    )
    say("Argo CD syncs: " + ", ".join(f"{n} {s['syncs']}" for n, s in sorted(states.items())))
