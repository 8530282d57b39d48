"""The loop's judgment end to end with the local runtime on the real API server: real
model servers and gateway on loopback, tiny BERTs with known answers, clients as users
have them. Each test reproduces a finding of a user trial (and failed before this
judgment existed):

- clients that keep cookies (``httpx.Client``) starved the canary: now requests are
  drawn by weight, no cookie is set, and the canary serves its share;
- a canary answering differently was rolled back by the divergence gate: by default the
  distance is reported, not gating;
- a feedback gate that had too few labels let the canary through: the step now holds,
  says what it waits for, and decides once the labels are there;
- a new model is scored offline against stable on stable's test split before any
  traffic: a worse one is refused with the numbers, and no request ever reaches it;
- with ``rollout.shadow`` its answers to mirrored requests are compared with stable's
  before any user traffic moves.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from bertops.operator.kube import Kube
from bertops.operator.rollout.metrics import parse_gateway
from tests.operator.conftest import has_event, wait_events
from tests.operator.serving_helpers import (
    FEEDBACK_SECRET,
    TEXTS,
    deployment,
    feedback_credentials,
    model,
    serving_pids,
)
from tests.operator.test_deployment_local import (
    artifacts,
    ready_model,
    serving_stable,
    state,
    status_of,
)
from tests.operator.test_local_runtime import dataset, tweets_csv
from tests.server.helpers import GatewayUrl
from tests.waiting import condition_of as condition
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
__all__ = ["artifacts", "state", "tweets_csv"]  # fixtures shared with their modules
STEPS = [{"weight": 30, "pauseSeconds": 2}, {"weight": 60, "pauseSeconds": 2}]


class CookieClient:
    """A client as most services have one: one httpx.Client (it keeps every cookie it is
    given), no sticky key header, requests in a loop until stopped (bounded)."""

    def __init__(self, endpoint: str, max_requests: int = 5000) -> None:
        assert endpoint.startswith("http://127.0.0.1:"), endpoint
        self.endpoint = endpoint
        self.max_requests = max_requests
        self.statuses: Counter[int] = Counter()
        self.cookies: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            for i in range(self.max_requests):
                if self._stop.is_set():
                    break
                answer = client.post(
                    self.endpoint + "/predict", json={"texts": [TEXTS[i % len(TEXTS)]]}
                )
                self.statuses[answer.status_code] += 1
                self._stop.wait(0.01)
            self.cookies = dict(client.cookies)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


@contextlib.contextmanager
def traffic_stopped(client: CookieClient) -> Iterator[CookieClient]:
    try:
        yield client
    finally:
        client.stop()


def requests_by(endpoint: GatewayUrl) -> dict[tuple[str, str], float]:
    """Inference requests per (variant, model), from the gateway's metrics listener."""
    found = parse_gateway(httpx.get(endpoint.metrics + "/metrics", timeout=10).text)
    return {key: seen.requests for key, seen in found.items()}


def serve_v1(
    kube: Kube,
    namespace: str,
    start_operator: Any,
    v1: Path,
    state: Path,
    spec: dict[str, Any] | None = None,
) -> GatewayUrl:
    """An operator, tiny-v1 Ready and served by ``spec``'s deployment (two steps by
    default): its endpoint, knowing its metrics listener (status.metricsEndpoint)."""
    start_operator(namespace, state_dir=state)
    ready_model(kube, namespace, "tiny-v1", v1)
    kube.create(spec or deployment(namespace, steps=STEPS))
    status = serving_stable(kube, namespace, "tiny-v1")
    endpoint = GatewayUrl(status["endpoint"])
    endpoint.metrics = status["metricsEndpoint"]
    return endpoint


def test_clients_that_keep_cookies_still_give_the_canary_its_share(
    kube_layer: Kube, namespace: str, start_operator: Any, artifacts: dict[str, Path], state: Path
) -> None:
    endpoint = serve_v1(kube_layer, namespace, start_operator, artifacts["v1"], state)
    clients = [CookieClient(endpoint), CookieClient(endpoint)]
    try:
        ready_model(kube_layer, namespace, "tiny-v2", artifacts["good"])
        wait_for(lambda: status_of(kube_layer, namespace).get("canaryModel"), what="a canary")
        before = requests_by(endpoint).get(("stable", "tiny-v1"), 0.0)
        wait_for(
            lambda: status_of(kube_layer, namespace).get("stableModel") == "tiny-v2",
            timeout=120,
            what="tiny-v2 promoted",
        )
    finally:
        for client in clients:
            client.stop()
    counts = requests_by(endpoint)
    canary = counts.get(("canary", "tiny-v2"), 0.0)
    stable = counts.get(("stable", "tiny-v1"), 0.0) - before
    share = canary / (canary + stable)
    print(f"cookie-keeping clients: canary served {canary:.0f} of {canary + stable:.0f}")
    # Steps at 30% then 60% (and a moment at 0% before the gateway carried the first):
    # before, two such clients left the canary 0 of 3,300 requests.
    assert canary >= 50 and 0.15 <= share <= 0.7, (canary, stable)
    for client in clients:
        assert client.cookies == {}  # nothing pins a client to a variant
        assert set(client.statuses) == {200}, client.statuses


def test_a_canary_that_answers_differently_is_reported_not_rolled_back(
    kube_layer: Kube, namespace: str, start_operator: Any, artifacts: dict[str, Path], state: Path
) -> None:
    endpoint = serve_v1(kube_layer, namespace, start_operator, artifacts["v1"], state)
    client = CookieClient(endpoint)
    seen: list[dict[str, Any]] = []

    def promoted() -> bool:
        st = status_of(kube_layer, namespace)
        seen.extend(g for g in (st.get("analysis") or {}).get("gates") or [])
        return st.get("stableModel") == "tiny-v2p"

    try:
        ready_model(kube_layer, namespace, "tiny-v2p", artifacts["diverging"])
        wait_for(promoted, timeout=120, interval=0.2, what="tiny-v2p promoted")
    finally:
        client.stop()
    divergence = [g for g in seen if g["name"] == "predictionDivergence" and "value" in g]
    assert divergence, seen[-5:]
    # Every answer differs (JS distance 1), and it is shown, never a reason to roll back.
    assert {g["result"] for g in divergence} == {"Reported"}
    assert divergence[-1]["value"] == pytest.approx(1.0)
    assert "Failed" not in {g["result"] for g in seen}


def test_a_shadow_phase_judges_mirrored_answers_before_any_user_traffic(
    kube_layer: Kube, namespace: str, start_operator: Any, artifacts: dict[str, Path], state: Path
) -> None:
    spec = deployment(namespace, steps=[{"weight": 50, "pauseSeconds": 2}])
    spec["spec"]["rollout"].update(shadow=True, shadowSeconds=3)
    endpoint = serve_v1(kube_layer, namespace, start_operator, artifacts["v1"], state, spec)
    client = CookieClient(endpoint)
    shadowed: list[dict[str, Any]] = []

    def promoted() -> bool:
        st = status_of(kube_layer, namespace)
        if st.get("shadowing"):
            shadowed.append(st)
        return st.get("stableModel") == "tiny-v2"

    try:
        ready_model(kube_layer, namespace, "tiny-v2", artifacts["good"])
        wait_for(lambda: status_of(kube_layer, namespace).get("shadowing"), what="the shadow phase")
        mirrored = wait_for(
            lambda: requests_by(endpoint).get(("shadow", "tiny-v2"), 0) >= 20 and True,
            what="mirrored requests answered by tiny-v2",
        )
        assert mirrored and requests_by(endpoint).get(("canary", "tiny-v2"), 0) == 0
        wait_for(promoted, timeout=120, interval=0.2, what="tiny-v2 promoted after its shadow")
    finally:
        client.stop()
    assert shadowed and all(st["canaryWeight"] == 0 for st in shadowed)
    gates = {g["name"]: g for st in shadowed for g in (st.get("analysis") or {}).get("gates", [])}
    assert gates["agreement"]["value"] == pytest.approx(1.0)  # the same weights: always agree
    assert requests_by(endpoint).get(("canary", "tiny-v2"), 0) > 0  # then user traffic
    assert set(client.statuses) == {200}


def label(endpoint: str, http: httpx.Client, count: int, labeler: dict[str, str]) -> int:
    """``count`` predictions, each answered with a feedback label (the true one) by a
    client with a feedback credential."""
    accepted = 0
    for i in range(count):
        answer = http.post(endpoint + "/predict", json={"texts": [TEXTS[i % len(TEXTS)]]})
        assert answer.status_code == 200, answer.text
        fed = http.post(
            endpoint + "/feedback",
            json={"requestId": answer.headers["x-request-id"], "label": "negative"},
            headers=labeler,
        )
        accepted += fed.status_code == 200
    return accepted


def test_a_feedback_gate_judges_before_the_canary_is_promoted(
    kube_layer: Kube, namespace: str, start_operator: Any, artifacts: dict[str, Path], state: Path
) -> None:
    spec = deployment(
        namespace,
        steps=[{"weight": 50, "pauseSeconds": 2}],
        minFeedbackAccuracy=0.72,
        minFeedback=30,
    )
    spec["spec"]["serving"]["feedback"] = {"credentialsSecret": FEEDBACK_SECRET}
    labeler = feedback_credentials(kube_layer, namespace)
    endpoint = serve_v1(kube_layer, namespace, start_operator, artifacts["v1"], state, spec)
    traffic = CookieClient(endpoint)  # unlabelled requests: the other gates get sure
    with traffic_stopped(traffic), httpx.Client(timeout=30) as http:
        ready_model(kube_layer, namespace, "tiny-v2", artifacts["good"])
        wait_for(lambda: status_of(kube_layer, namespace).get("canaryModel"), what="a canary")
        assert label(endpoint, http, 40, labeler) == 40  # about 20 of them reach the canary
        held = wait_for(
            lambda: (
                (c := condition(kube_layer.get("BertDeployment", namespace, "web"), "Progressing"))
                and "feedbackAccuracy" in (c.get("message") or "")
                and c
            ),
            timeout=30,
            what="the step holding for feedback",
        )
        assert held["reason"] in ("WaitingForTraffic", "NotYetSure"), held
        assert "of the 30 needed" in held["message"]
        assert status_of(kube_layer, namespace)["canaryModel"] == "tiny-v2"
        label(endpoint, http, 300, labeler)
        wait_for(
            lambda: status_of(kube_layer, namespace).get("stableModel") == "tiny-v2",
            timeout=90,
            what="tiny-v2 promoted once the labels judged it",
        )
    history = status_of(kube_layer, namespace)["history"]
    assert [h["outcome"] for h in history] == ["Promoted"]


def ready(kube: Kube, kind: str, namespace: str, name: str) -> None:
    wait_for(
        lambda: (condition(kube.get(kind, namespace, name), "Ready") or {}).get("status") == "True",
        timeout=120,
        what=f"{kind} {name} Ready",
    )


@pytest.fixture(scope="module")
def mostly_negative_csv(tweets_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 tweets, three quarters negative: answering "negative" always scores about 0.75
    on its test split, answering "positive" always about 0.12."""
    frame = pd.read_csv(tweets_csv)
    parts = [frame[frame["sentiment"] == "negative"].head(60)]
    parts += [frame[frame["sentiment"] == s].head(10) for s in ("neutral", "positive")]
    path = tmp_path_factory.mktemp("skewed") / "mostly-negative.csv"
    pd.concat(parts).sample(frac=1, random_state=2).to_csv(path, index=False)
    return path


def test_a_model_worse_on_the_frozen_test_split_is_refused_before_any_traffic(
    kube_layer: Kube,
    namespace: str,
    start_operator: Any,
    artifacts: dict[str, Path],
    state: Path,
    mostly_negative_csv: Path,
) -> None:
    start_operator(namespace, state_dir=state)
    kube_layer.create(dataset(namespace, mostly_negative_csv, name="skewed"))
    ready(kube_layer, "BertDataset", namespace, "skewed")
    stable = model(namespace, "tiny-v1", artifacts["v1"])
    stable["spec"]["evaluationDatasetRef"] = {"name": "skewed"}  # its test split is frozen
    kube_layer.create(stable)
    ready(kube_layer, "BertModel", namespace, "tiny-v1")
    kube_layer.create(deployment(namespace, steps=STEPS, offlineEvaluation=True))
    serving_stable(kube_layer, namespace, "tiny-v1")
    ready_model(kube_layer, namespace, "tiny-v2p", artifacts["diverging"])
    refused = wait_for(
        lambda: (
            (st := status_of(kube_layer, namespace)).get("history")
            and st["history"][-1]["outcome"] == "Refused"
            and st
        ),
        timeout=180,
        what="tiny-v2p refused by the offline evaluation",
    )
    challenge = refused["challenge"]
    assert (challenge["model"], challenge["stable"], challenge["phase"]) == (
        "tiny-v2p",
        "tiny-v1",
        "Refused",
    )
    (test_split,) = [s for s in challenge["scores"] if s["set"] == "testSplit"]
    assert test_split["rows"] >= 10  # 15% of 80 rows, stratified
    assert test_split["stable"] > 0.5 > test_split["candidate"]
    assert refused["history"][-1]["scores"] == challenge["scores"]
    degraded = condition({"status": refused}, "Degraded") or {}
    assert (degraded.get("status"), degraded.get("reason")) == ("True", "OfflineEvaluationRefused")
    assert "maxOfflineDrop" in degraded["message"]
    assert not refused.get("canaryModel") and refused["rejectedModel"] == "tiny-v2p"
    # No traffic ever moved: the refused model never got a server.
    assert set(serving_pids(state, namespace, "web")) == {"gateway", "web-tiny-v1"}
    wait_events(
        kube_layer, namespace, "web", has_event("Warning", "OfflineEvaluationRefused"), "Warning"
    )
