"""The gitops/ packaging: every base, overlay and app renders with ``kubectl kustomize``,
holds what a platform team expects (least-privilege RBAC, a hardened operator Deployment
with the artifact volume read-only at /artifacts, the step ServiceAccount, the
NetworkPolicies), and everything rendered passes server-side dry-run on the embedded API
server (CRDs and namespaces applied first, for real)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bertops.operator.uris import METADATA_ADDRESSES, http_host_problem
from tests.gitops.render import GITOPS, apply, by_kind, kubectl_run, kustomizations, one, render

DIRS = kustomizations()
IDS = [str(path.relative_to(GITOPS)) for path in DIRS]
OPERATOR_OVERLAYS = [
    "operator/overlays/dev",
    "operator/overlays/prod",
    "operator/overlays/namespaced",
]


def test_the_expected_packages_exist() -> None:
    for expected in ["operator/base", *OPERATOR_OVERLAYS, "apps/sentiment/overlays/dev"]:
        assert expected in IDS


@pytest.mark.parametrize("directory", DIRS, ids=IDS)
def test_renders(directory: Path) -> None:
    docs = render(directory)
    assert docs
    for doc in docs:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]


@pytest.mark.parametrize("overlay", OPERATOR_OVERLAYS)
def test_operator_deployment_is_hardened(overlay: str) -> None:
    docs = render(GITOPS / overlay)
    deployment = one(docs, "Deployment", "bertops-operator")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["serviceAccountName"] == "bertops-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "metrics"
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "artifacts")
    assert mount == {"name": "artifacts", "mountPath": "/artifacts", "readOnly": True}
    volume = next(v for v in pod["volumes"] if v["name"] == "artifacts")
    claim = one(docs, "PersistentVolumeClaim", "bertops-artifacts")
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    pv = one(docs, "PersistentVolume", claim["spec"]["volumeName"])
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"  # uninstall keeps models
    service = one(docs, "Service", "bertops-operator-metrics")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def _rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = one(docs, "ClusterRole", "bertops-operator")["rules"]
    return rules


def test_operator_rbac_is_least_privilege() -> None:
    docs = render(GITOPS / "operator/base")
    rules = _rules(docs)
    resources = {
        (group, r) for rule in rules for group in rule["apiGroups"] for r in rule["resources"]
    }
    verbs = {v for rule in rules for v in rule["verbs"]}
    assert ("", "secrets") not in resources
    assert not any(r.startswith(("pods/exec", "pods/attach")) for _, r in resources)
    assert "*" not in verbs and "escalate" not in verbs and "bind" not in verbs
    kinds = next(r for r in rules if "bertdatasets" in r["resources"])
    assert "update" not in kinds["verbs"] and "delete" not in kinds["verbs"]
    # The per-step DDP NetworkPolicy: applied (create + patch), read, deleted; no more.
    policies = next(r for r in rules if "networkpolicies" in r["resources"])
    assert policies["apiGroups"] == ["networking.k8s.io"]
    assert policies["resources"] == ["networkpolicies"]
    assert policies["verbs"] == ["get", "create", "patch", "delete"]
    lease = one(docs, "Role", "bertops-operator-leader-election")
    assert lease["metadata"]["namespace"] == "bertops-system"
    assert lease["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        }
    ]
    args = one(docs, "Deployment", "bertops-operator")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert "--lease-namespace=$(POD_NAMESPACE)" in args


def test_namespaced_install_binds_per_namespace() -> None:
    docs = render(GITOPS / "operator/overlays/namespaced")
    # Only kopf's read-only observers (CRDs, namespaces) stay bound cluster-wide.
    (cluster_wide,) = by_kind(docs, "ClusterRoleBinding")
    assert cluster_wide["roleRef"]["name"] == "bertops-operator-discovery"
    observers = one(docs, "ClusterRole", "bertops-operator-discovery")["rules"]
    assert {v for rule in observers for v in rule["verbs"]} == {"list", "watch"}
    binding = one(docs, "RoleBinding", "bertops-operator")
    assert binding["metadata"]["namespace"] == "ml-team"
    args = one(docs, "Deployment", "bertops-operator")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert "--namespace=ml-team" in args


def test_app_has_step_identity_and_network_policies() -> None:
    docs = render(GITOPS / "apps/sentiment/overlays/dev")
    step = one(docs, "ServiceAccount", "bertops-step")
    assert step["automountServiceAccountToken"] is False
    steps = one(docs, "NetworkPolicy", "bertops-steps")
    # No ingress to steps at all: the operator's per-step policy opens the DDP port only
    # between one training's own pods (tests/operator/test_ddp_network_policy.py).
    assert steps["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert steps["spec"]["ingress"] == []
    assert "29500" not in yaml.safe_dump(steps)
    # Egress excludes what the URI check refuses: every metadata address, all link-local.
    peers = [peer for rule in steps["spec"]["egress"] for peer in rule["to"]]
    blocks = [peer["ipBlock"] for peer in peers if "ipBlock" in peer]
    blocks = [b for b in blocks if b["cidr"] in ("0.0.0.0/0", "::/0")]
    excluded = [ipaddress.ip_network(cidr) for b in blocks for cidr in b["except"]]
    for address in (*METADATA_ADDRESSES, ipaddress.ip_address("169.254.170.2")):
        assert any(address in network for network in excluded), address
        host = f"[{address}]" if address.version == 6 else str(address)
        assert http_host_problem(f"https://{host}/x", allow_loopback=False), address
    for link_local in ("169.254.0.0/16", "fe80::/10"):
        assert ipaddress.ip_network(link_local) in excluded
    # Argo-run ranks (engine: argo) are not selected by the operator's per-step policy.
    argo = one(docs, "NetworkPolicy", "bertops-argo-ddp")["spec"]
    assert argo["podSelector"]["matchExpressions"] == [
        {"key": "workflows.argoproj.io/workflow", "operator": "Exists"}
    ]
    assert argo["ingress"] == [
        {
            "from": [{"podSelector": argo["podSelector"]}],
            "ports": [{"port": 29500, "protocol": "TCP"}],
        }
    ]
    servers = one(docs, "NetworkPolicy", "bertops-model-servers")
    sources = [peer for rule in servers["spec"]["ingress"] for peer in rule["from"]]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/component": "gateway"}}} in sources
    for doc in docs:
        if doc["apiVersion"].startswith("bertops.io/"):
            assert doc["metadata"]["namespace"] == "bertops-demo"
            notes = doc["metadata"]["annotations"]
            assert notes["argocd.argoproj.io/sync-wave"] == "1"
            assert "SkipDryRunOnMissingResource=true" in notes["argocd.argoproj.io/sync-options"]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_a_tenants_volume_is_its_own_folder_of_the_store(overlay: str) -> None:
    """An app namespace's PersistentVolume is ``<export>/<namespace>``, bound only to that
    namespace's claim: its pods cannot reach another tenant's files. The operator's is
    the whole export, read-only."""
    docs = render(GITOPS / f"apps/sentiment/overlays/{overlay}")
    claim = one(docs, "PersistentVolumeClaim", "bertops-artifacts")
    (volume,) = by_kind(docs, "PersistentVolume")
    tenant = claim["metadata"]["namespace"]
    assert volume["spec"]["claimRef"] == {"namespace": tenant, "name": "bertops-artifacts"}
    assert claim["spec"]["volumeName"] == volume["metadata"]["name"]
    source = volume["spec"].get("hostPath") or volume["spec"]["nfs"]
    operator = render(GITOPS / f"operator/overlays/{overlay}")
    (store,) = by_kind(operator, "PersistentVolume")
    whole = (store["spec"].get("hostPath") or store["spec"]["nfs"])["path"]
    assert source["path"] == f"{whole}/{tenant}"


def test_no_secrets_in_git() -> None:
    for directory in DIRS:
        assert not by_kind(render(directory), "Secret"), directory


def is_argo(doc: dict[str, Any]) -> bool:
    return str(doc["apiVersion"]).startswith("argoproj.io/")


def argocd_crds() -> list[dict[str, Any]]:
    """Argo CD's CRDs from the cached build (`bertops cluster argocd build`), else none."""
    from bertops.cluster.argocd.build import cached_binary, crds_dir

    if cached_binary() is None:
        return []
    return [yaml.safe_load(p.read_text()) for p in sorted(crds_dir().glob("*-crd.yaml"))]


def test_argocd_applications_sync_crds_and_operator_first() -> None:
    apps = render(GITOPS / "argocd/apps")
    waves = {
        d["metadata"]["name"]: int(d["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])
        for d in by_kind(apps, "Application")
    }
    assert waves["bertops-operator"] < waves["bertops-sentiment"]
    sentiment = one(apps, "Application", "bertops-sentiment")
    assert "SkipDryRunOnMissingResource=true" in sentiment["spec"]["syncPolicy"]["syncOptions"]
    (appset,) = by_kind(apps, "ApplicationSet")
    envs = [e["env"] for e in appset["spec"]["generators"][0]["list"]["elements"]]
    for env in envs:
        assert (GITOPS / "environments" / env / "kustomization.yaml").is_file()
    operator = render(GITOPS / "environments/dev")
    wave = {
        (d["kind"], d["metadata"]["name"]): int(
            d["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0")
        )
        for d in operator
    }
    assert (
        max(w for (k, _), w in wave.items() if k == "CustomResourceDefinition")
        < wave[("Deployment", "bertops-operator")]
    )
    assert wave[("Deployment", "bertops-operator")] < wave[("BertTraining", "sentiment-minilm-v1")]
    project = one(render(GITOPS / "argocd/project"), "AppProject", "bertops")
    assert {"group": "", "kind": "Secret"} in project["spec"]["namespaceResourceBlacklist"]


@pytest.fixture
def fresh_cluster(bertops_home: Path) -> Iterator[Any]:
    """A cluster of its own: the session cluster holds real PVs and claims other tests
    created (dev storage), whose immutable fields a prod dry-run would collide with."""
    from bertops.cluster.controlplane import Cluster

    handle = Cluster(f"pytest-dry-run-{os.getpid()}")
    handle.up()
    yield handle
    handle.down(purge=True)


@pytest.mark.integration
@pytest.mark.slow
def test_everything_rendered_passes_server_side_dry_run(fresh_cluster: Any) -> None:
    cluster = fresh_cluster
    rendered = {directory: render(directory) for directory in DIRS}
    first = {"CustomResourceDefinition", "Namespace"}
    # CRDs and namespaces first, for real: the dry-run of a custom resource or of a
    # namespaced object needs them to exist (argocd's own namespace is Argo CD's install).
    argo = argocd_crds()
    if not argo:  # Argo CD's own kinds need its CRDs: from the cached argocd build
        rendered = {d: [x for x in docs if not is_argo(x)] for d, docs in rendered.items()}
    everything = argo + [doc for docs in rendered.values() for doc in docs]
    setup = {(d["kind"], d["metadata"]["name"]): d for d in everything if d["kind"] in first}
    for doc in everything:
        if name := doc["metadata"].get("namespace"):
            ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            setup.setdefault(("Namespace", name), ns)
    apply(cluster.kubeconfig, list(setup.values()))
    kubectl_run(
        cluster.kubeconfig, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"
    )
    for directory, docs in rendered.items():
        rest = [doc for doc in docs if doc["kind"] not in first]
        if not rest:  # only Argo CD kinds, and no Argo CD CRDs here
            continue
        out = apply(cluster.kubeconfig, rest, "--dry-run=server", "--field-manager=gitops-test")
        assert "(server dry run)" in out, directory
