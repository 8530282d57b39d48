"""The chain in real pods with the artifact store on the real S3 server (VersityGW) instead
of a hostPath volume: pods mount no volume of the store; they reach the server through
the Service ``bertops-s3`` (a relay into the node's network namespace,
bertops.cluster.storage.node_access) with their namespace's own key, which the store
allows only that namespace's prefix, handed to it as the Secret and ConfigMap
``bertops-artifacts-s3``. The example dataset (its CSV in the
bucket) → a 2-rank training → its model → an INT8 model, then a BertDeployment whose
model server downloads and verifies the model from the bucket and ships its prediction
log there, and whose answer comes through the gateway's Service."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import s3fs
from kubernetes import client

from bertops.cluster.node.netns import call_inside, netns_name
from bertops.cluster.storage.cluster_objects import hand_over
from bertops.cluster.storage.node_access import expose, pod_client_env, withdraw
from bertops.cluster.storage.run import Storage
from bertops.cluster.storage.tenants import Tenants
from bertops.operator.config import OperatorConfig
from bertops.operator.kube import Kube
from tests.node.test_node_e2e import INDEX_LABEL, node_namespace, pods, reason, start_training
from tests.operator.conftest import RunningOperator, delete_deployments
from tests.operator.serving_helpers import deployment
from tests.s3 import needs_s3
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.e2e, needs_s3]
__all__ = ["node_namespace", "tweets_csv"]
from tests.operator.test_local_runtime import tweets_csv  # noqa: E402  (module fixture)


@pytest.fixture
def s3_in_cluster(
    node_cluster: Any, s3_store: Storage, s3_env: dict[str, str], node_namespace: str
) -> Iterator[str]:
    """The S3 server reachable from the node's pods, and the namespace's own key (allowed
    only its prefix: storage.tenants) handed to it; the artifact root, a prefix of the
    bucket. The operator, in this process, keeps the root key."""
    port = int(s3_env["AWS_ENDPOINT_URL_S3"].rsplit(":", 1)[1])
    state = s3_store.directory
    expose(node_cluster.kubeconfig, node_cluster.name, port, state)
    prefix = f"{node_namespace}-store"
    tenant = Tenants(s3_store).client_env(node_namespace, prefix)
    assert tenant["AWS_ACCESS_KEY_ID"] != s3_env["AWS_ACCESS_KEY_ID"]
    hand_over(node_cluster.kubeconfig, node_namespace, pod_client_env(tenant, port))
    try:
        yield f"s3://bertops/{prefix}"
    finally:
        withdraw(state)


def int8_model(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "bertops.io/v1alpha1",
        "kind": "BertModel",
        "metadata": {"name": "tiny-v1-int8", "namespace": namespace},
        "spec": {
            "family": "tiny-int8",  # not the deployment's family: it serves tiny-v1
            "compression": {
                "parentRef": {"name": "tiny-v1"},
                "steps": [{"method": "quantize", "granularity": "perChannel"}],
                "gate": {"maxAccuracyDrop": 0.3, "maxF1Drop": 0.3},
            },
        },
    }


def test_the_chain_runs_in_pods_on_s3(
    node_cluster: Any,
    node_kube: Any,
    node_namespace: str,
    s3_in_cluster: str,
    tweets_csv: Path,
    tmp_path: Path,
) -> None:
    kube, ns, root = Kube(node_kube), node_namespace, s3_in_cluster
    store = s3fs.S3FileSystem(skip_instance_cache=True)
    data = f"{root}/{ns}/data/tweets.csv"
    store.put_file(str(tweets_csv), data.removeprefix("s3://"))
    config = OperatorConfig(
        namespaces=(ns,),
        runtime="kubernetes",
        artifact_root=root,
        state_dir=tmp_path / "state",
        poll_seconds=1.0,
        step_retry_base_seconds=1.0,
    )
    operator = RunningOperator(config, str(node_cluster.kubeconfig))
    try:
        start_training(kube, ns, data, epochs=1, replicas=2)  # type: ignore[arg-type]
        kube.create(int8_model(ns))
        # Both ranks of the Indexed Job ran as pods (the Job controller creates them one
        # after the other: collect what each look sees).
        ranks: dict[str, Any] = {}

        def both_ranks() -> bool:
            for found in pods(node_kube, ns):
                index = found.metadata.labels.get(INDEX_LABEL)
                if index is not None and "train" in found.metadata.name:
                    ranks.setdefault(index, found)
            return set(ranks) >= {"0", "1"}

        wait_for(both_ranks, timeout=300, what="both training ranks as pods")
        for name in ("tiny-v1", "tiny-v1-int8"):

            def verified(name: str = name) -> bool:
                return reason(kube, "BertModel", ns, name) == "Verified"

            wait_for(verified, timeout=600, what=f"{name} Ready from pods on S3")
            status = (kube.get("BertModel", ns, name) or {})["status"]
            assert status["artifactUri"].startswith(f"{root}/{ns}/models/"), status
        volumes = {v.name for p in pods(node_kube, ns) if p.spec for v in p.spec.volumes or ()}
        assert "artifacts" not in volumes, volumes  # no volume of the store at all
        # Rank 0's log (the node's podLogsDir) says both ranks joined one gloo group.
        logs = node_cluster.directory / "node" / "pod-logs"
        rank0 = ranks["0"].metadata.name
        text = "".join(f.read_text() for f in logs.glob(f"{ns}_{rank0}_*/step/*.log"))
        assert "2 rank(s)" in text, text[-2000:]

        body = deployment(ns)
        body["spec"]["serving"]["predictionLog"] = "hash"
        kube.create(body)
        wait_for(
            lambda: (
                ((kube.get("BertDeployment", ns, "web") or {}).get("status") or {}).get(
                    "stableModel"
                )
                == "tiny-v1"
                and reason(kube, "BertDeployment", ns, "web") == "Serving"
            ),
            timeout=300,
            what="tiny-v1 served from S3 in pods",
        )
        service = client.CoreV1Api(node_kube).read_namespaced_service("web-gateway", ns)
        assert service.spec is not None
        endpoint = f"http://{service.spec.cluster_ip}:8000"
        texts = {"texts": [f"the flight {n} was late" for n in range(5)]}

        def answer() -> httpx.Response:
            return httpx.post(f"{endpoint}/predict", json=texts, timeout=30)

        response = call_inside(netns_name(node_cluster.name), answer)
        assert response.status_code == 200, response.text
        # The server's prediction log, spooled in the pod's /tmp, lands in the bucket.
        logs = f"{root}/{ns}/deployments/web/predictions".removeprefix("s3://")
        wait_for(
            lambda: store.invalidate_cache() or (store.exists(logs) and store.find(logs)),
            timeout=60,
            what="the prediction log shipped from the pod",
        )
        written = store.find(f"{root}/{ns}".removeprefix("s3://"))
        assert not any(".tmp-" in path for path in written)
        delete_deployments(node_kube, {ns})
    finally:
        operator.stop()
