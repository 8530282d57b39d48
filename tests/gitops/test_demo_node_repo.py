"""What the node demo commits to Git, rendered by ``kubectl kustomize`` as Argo CD's
repo-server does: the sentiment app's base with the node's volume and the demo's sizes,
every bertops object still valid for the API types, and the Git change the demo makes
later (two server replicas) landing in the rendered BertDeployment."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bertops.api.dataset import BertDataset
from bertops.api.deployment import BertDeployment
from bertops.api.model import BertModel
from bertops.api.training import BertTraining
from bertops.cluster import demo_node_app
from bertops.cluster.demo_traffic import Gateway, check_loopback
from bertops.cluster.gitops_repo import LocalRepo
from tests.gitops.render import one, render

TYPES = {
    "BertDataset": BertDataset,
    "BertTraining": BertTraining,
    "BertModel": BertModel,
    "BertDeployment": BertDeployment,
}


def test_the_demo_repository_renders_the_app_sized_for_the_node(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    repo = LocalRepo.create(tmp_path)
    demo_node_app.write(repo, artifacts, epochs=2)
    first = repo.commit("node overlays")

    docs = render(repo.path / demo_node_app.APP_DIR)
    namespace = demo_node_app.APP_NS
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] in TYPES} == {namespace}
    for doc in docs:
        if doc["kind"] in TYPES:
            TYPES[doc["kind"]].model_validate(doc)
            assert doc["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "1"
    volume = one(docs, "PersistentVolume", f"bertops-artifacts-{namespace}")
    # The namespace's own folder of the store, never the whole store.
    assert volume["spec"]["hostPath"]["path"] == str(artifacts / namespace)
    claim = one(docs, "PersistentVolumeClaim", "bertops-artifacts")
    assert claim["spec"]["volumeName"] == f"bertops-artifacts-{namespace}"
    dataset = one(docs, "BertDataset", "sentiment-tweets")
    assert dataset["spec"]["source"]["uri"] == demo_node_app.DATA_URI
    training = one(docs, "BertTraining", "sentiment-minilm-v1")
    assert training["spec"]["replicas"] == 2
    assert training["spec"]["resources"]["cpu"] == "400m"
    deployment = one(docs, "BertDeployment", "sentiment")
    assert deployment["spec"]["serving"]["replicas"] == 1
    assert deployment["spec"]["serving"]["resources"] == {"cpu": "250m", "memory": "2Gi"}
    # Every spec is make demo's, whole: none of the base's production settings remain
    # (a merge once kept its maxErrorRate 0.02, and the canary waited ten minutes).
    for doc in demo_node_app.example_docs():
        rendered = one(docs, doc["kind"], doc["metadata"]["name"])["spec"]
        if doc["kind"] == "BertTraining":
            # kustomize writes 5e-05, a float to Go's YAML but a string to PyYAML's 1.1.
            learning_rate = rendered["hyperparameters"]["learningRate"]
            rendered["hyperparameters"]["learningRate"] = float(learning_rate)
        assert rendered == doc["spec"], doc["kind"]
    assert "maxErrorRate" not in deployment["spec"]["rollout"]["analysis"]

    operator = render(repo.path / "local/operator")
    assert one(operator, "Deployment", "bertops-operator")["spec"]["replicas"] == 2
    for pv in (d for d in operator if d["kind"] == "PersistentVolume"):
        assert pv["spec"]["hostPath"]["path"] == str(artifacts)

    second = repo.edit(
        demo_node_app.APP_KUSTOMIZATION, demo_node_app.set_replicas(2), "two replicas"
    )
    assert second != first and repo.git("log", "--format=%s", "-1") == "two replicas"
    changed = one(render(repo.path / demo_node_app.APP_DIR), "BertDeployment", "sentiment")
    assert changed["spec"]["serving"]["replicas"] == 2
    assert changed["spec"]["rollout"] == deployment["spec"]["rollout"]


def test_the_applications_point_at_the_local_repository() -> None:
    docs = list(yaml.safe_load_all(demo_node_app.argocd_objects("file:///tmp/repo")))
    project, *apps = docs
    assert project["kind"] == "AppProject" and project["spec"]["sourceRepos"] == [
        "file:///tmp/repo"
    ]
    assert {a["spec"]["source"]["path"] for a in apps} == {"local/operator", "local/apps/sentiment"}
    assert all(a["spec"]["destination"]["name"] == "embedded" for a in apps)
    assert all(a["spec"]["source"]["repoURL"] == "file:///tmp/repo" for a in apps)


def test_node_traffic_goes_only_to_the_nodes_service_and_pod_addresses() -> None:
    assert check_loopback("http://10.0.0.17:8000/", in_node=True) == "http://10.0.0.17:8000"
    assert check_loopback("http://10.204.0.9:8000", in_node=True) == "http://10.204.0.9:8000"
    for outside in ("http://10.1.0.1:8000", "http://192.168.1.1", "http://example.com"):
        for in_node in (False, True):
            with pytest.raises(ValueError, match="sends traffic only to"):
                check_loopback(outside, in_node=in_node)
    with pytest.raises(ValueError, match=r"only to loopback, not 10\.0\.0\.17"):
        check_loopback("http://10.0.0.17:8000")
    assert Gateway("http://127.0.0.1:1").run(lambda: 7) == 7
