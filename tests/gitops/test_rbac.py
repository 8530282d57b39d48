"""Least privilege, proven on the embedded API server (which enforces RBAC; the admin
token is in system:masters). The namespaced overlay's ServiceAccount, Roles and admission
policy are applied as rendered; the real operator (``bertops operator --runtime
kubernetes``) runs as that ServiceAccount with a TokenRequest token, takes its Lease and
reconciles the example dataset (status patched, ConfigMap + Job created), with no 403 in
its log. The same identity gets 403 for Secrets, other namespaces, deleting or rewriting a
user's object (RBAC) and changing a user's spec through the patch kopf needs for its
annotations (the ValidatingAdmissionPolicy in spec-guard.yaml)."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from bertops.api.kinds import GROUP, VERSION
from tests.gitops.render import GITOPS, apply, kubectl_run, one, render
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SYSTEM, TEAM = "bertops-system", "ml-team"
DATASETS = "bertdatasets"


def sa_kubeconfig(admin: Path, token: str, target: Path) -> Path:
    conf = yaml.safe_load(admin.read_text())
    conf["users"] = [{"name": "bertops-operator", "user": {"token": token}}]
    conf["contexts"][0]["context"]["user"] = "bertops-operator"
    target.write_text(yaml.safe_dump(conf))
    target.chmod(0o600)
    return target


def meta(name: str) -> client.V1ObjectMeta:
    return client.V1ObjectMeta(name=name)


def forbidden(call: Callable[[], Any]) -> str:
    with pytest.raises(ApiException) as raised:
        call()
    assert raised.value.status == 403, raised.value
    return str(raised.value.body)


@pytest.fixture(scope="module")
def installed(cluster: Any) -> list[dict[str, Any]]:
    docs = render(GITOPS / "operator/overlays/namespaced")
    first = [d for d in docs if d["kind"] in ("CustomResourceDefinition", "Namespace")]
    apply(cluster.kubeconfig, first)
    kubectl_run(cluster.kubeconfig, "wait", "--for=condition=Established", "crd", "--all")
    apply(cluster.kubeconfig, [d for d in docs if d not in first])
    return docs


@pytest.fixture(scope="module")
def operator_kubeconfig(cluster: Any, installed: Any, tmp_path_factory: Any) -> Path:
    proc = kubectl_run(
        cluster.kubeconfig, "create", "token", "bertops-operator", "-n", SYSTEM, "--duration=1h"
    )
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip()
    claims = token.split(".")[1]
    assert b"bertops-operator" in base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4))
    return sa_kubeconfig(cluster.kubeconfig, token, tmp_path_factory.mktemp("sa") / "kubeconfig")


@pytest.fixture(scope="module")
def as_operator(operator_kubeconfig: Path) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(operator_kubeconfig))
    yield api
    api.close()


@pytest.fixture(scope="module")
def running_operator(
    operator_kubeconfig: Path, installed: Any, tmp_path_factory: Any
) -> Iterator[Path]:
    """``bertops operator`` as the ServiceAccount, with the Deployment's arguments."""
    deployment = one(installed, "Deployment", "bertops-operator")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    args = [a.replace("$(POD_NAMESPACE)", SYSTEM) for a in args if not a.startswith("--image")]
    home = tmp_path_factory.mktemp("operator-home")
    log = home / "operator.log"
    cmd = [
        str(Path(sys.executable).parent / "bertops"),
        "operator",
        "--runtime=kubernetes",
        f"--kubeconfig={operator_kubeconfig}",
        "--poll=0.5",
        *[a for a in args if not a.startswith("--metrics-port")],
        "--metrics-port=0",
    ]
    env = {**os.environ, "BERTOPS_HOME": str(home), "KUBECONFIG": str(operator_kubeconfig)}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield log
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def get(custom: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    found = custom.get_namespaced_custom_object(GROUP, VERSION, TEAM, DATASETS, name)
    assert isinstance(found, dict)
    return found


def example(kind: str = "BertDataset", name: str = "sentiment-tweets") -> dict[str, Any]:
    docs = render(GITOPS / "apps/sentiment/overlays/dev")
    body = one(docs, kind, name)
    body["metadata"] = {"name": name, "namespace": TEAM}
    # The example's data lives in its namespace's part of the store: this one's here.
    text = json.dumps(body).replace("/artifacts/bertops-demo/", f"/artifacts/{TEAM}/")
    return dict(json.loads(text))


def example_dataset() -> dict[str, Any]:
    return example()


def test_operator_reconciles_as_its_service_account(
    cluster: Any, kube: Any, running_operator: Path
) -> None:
    custom = client.CustomObjectsApi(kube)
    try:
        custom.delete_namespaced_custom_object(GROUP, VERSION, TEAM, DATASETS, "sentiment-tweets")
    except ApiException as error:
        if error.status != 404:
            raise
    apply(cluster.kubeconfig, [example_dataset(), example("BertDeployment", "sentiment")])

    def ready() -> dict[str, Any] | None:
        body = get(custom, "sentiment-tweets")
        conditions = body.get("status", {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == "Ready"), None)

    condition = wait_for(ready, what="the operator's status on the dataset", timeout=90)
    assert condition["reason"] == "Preparing", condition
    step = get(custom, "sentiment-tweets")["status"]["step"]
    batch, core = client.BatchV1Api(kube), client.CoreV1Api(kube)
    job = wait_for(lambda: batch.read_namespaced_job(step, TEAM), what=f"Job {step}")
    assert job.spec.template.spec.service_account_name == "bertops-step"
    assert job.metadata.owner_references[0].kind == "BertDataset"
    assert (core.read_namespaced_config_map(step, TEAM).data or {})["spec.json"]
    lease = client.CoordinationV1Api(kube).read_namespaced_lease("bertops-operator", SYSTEM)
    assert lease.spec is not None and lease.spec.holder_identity
    # The BertDeployment reconciler too (model candidates, serving children).
    custom_admin = client.CustomObjectsApi(kube)

    def deployment_conditions() -> Any:
        body = custom_admin.get_namespaced_custom_object(
            GROUP, VERSION, TEAM, "bertdeployments", "sentiment"
        )
        assert isinstance(body, dict)
        return body.get("status", {}).get("conditions")

    wait_for(deployment_conditions, what="the operator's status on the BertDeployment")
    time.sleep(2)  # a few more polls (Job and pod reads) as the ServiceAccount
    text = running_operator.read_text()
    assert "status=403" not in text and "Forbidden" not in text, text[-4000:]


def test_what_the_operator_may_do(as_operator: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(as_operator)
    custom.list_namespaced_custom_object(GROUP, VERSION, TEAM, DATASETS)
    client.CoreV1Api(as_operator).list_namespaced_pod(TEAM)
    client.BatchV1Api(as_operator).list_namespaced_job(TEAM)
    client.CoordinationV1Api(as_operator).read_namespaced_lease("bertops-operator", SYSTEM)


def test_what_the_operator_may_not_do(
    kube: Any, as_operator: client.ApiClient, namespace: str
) -> None:
    core, custom = client.CoreV1Api(as_operator), client.CustomObjectsApi(as_operator)
    secret = client.V1Secret(metadata=client.V1ObjectMeta(name="creds"), string_data={"k": "v"})
    client.CoreV1Api(kube).create_namespaced_secret(TEAM, secret) if not _exists(
        kube, "creds"
    ) else None
    forbidden(lambda: core.list_namespaced_secret(TEAM))
    forbidden(lambda: core.read_namespaced_secret("creds", TEAM))
    forbidden(core.list_secret_for_all_namespaces)
    # Installed namespaced: nothing in any other namespace, nothing cluster-wide.
    forbidden(lambda: custom.list_namespaced_custom_object(GROUP, VERSION, namespace, DATASETS))
    forbidden(lambda: custom.list_cluster_custom_object(GROUP, VERSION, DATASETS))
    forbidden(
        lambda: core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=meta("x")))
    )
    forbidden(lambda: client.BatchV1Api(as_operator).list_namespaced_job(namespace))
    lease = client.V1Lease(
        metadata=meta("bertops-operator"), spec=client.V1LeaseSpec(holder_identity="x")
    )
    forbidden(lambda: client.CoordinationV1Api(as_operator).create_namespaced_lease(TEAM, lease))
    # No pods of its own, no exec into steps.
    pod = client.V1Pod(
        metadata=meta("p"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
    )
    forbidden(lambda: core.create_namespaced_pod(TEAM, pod))
    forbidden(lambda: core.connect_get_namespaced_pod_exec("p", TEAM, command=["sh"]))


def _exists(kube: Any, name: str) -> bool:
    try:
        client.CoreV1Api(kube).read_namespaced_secret(name, TEAM)
    except ApiException as error:
        if error.status != 404:
            raise
        return False
    return True


def test_the_operator_never_writes_a_users_spec(
    cluster: Any, as_operator: client.ApiClient, installed: Any
) -> None:
    custom = client.CustomObjectsApi(as_operator)
    body = example_dataset()
    body["metadata"]["name"] = "spec-guard"
    apply(cluster.kubeconfig, [body])
    name = "spec-guard"
    current = get(custom, name)
    # RBAC: no update (PUT) and no delete of a user's object.
    forbidden(
        lambda: custom.replace_namespaced_custom_object(
            GROUP, VERSION, TEAM, DATASETS, name, current
        )
    )
    forbidden(lambda: custom.delete_namespaced_custom_object(GROUP, VERSION, TEAM, DATASETS, name))
    # Admission: the patch kopf needs for its annotations may not touch spec.
    spec_change = {"spec": {"tokenizer": {"maxLength": 128}}}
    message = forbidden(
        lambda: custom.patch_namespaced_custom_object(
            GROUP, VERSION, TEAM, DATASETS, name, spec_change
        )
    )
    assert "never writes a user's spec" in message
    notes = {"metadata": {"annotations": {"bertops.io/last-handled-configuration": "{}"}}}
    custom.patch_namespaced_custom_object(GROUP, VERSION, TEAM, DATASETS, name, notes)
    # Status is the operator's.
    status = {"status": {"observedGeneration": 1}}
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, TEAM, DATASETS, name, status)
    after = get(custom, name)
    assert after["spec"] == current["spec"]
