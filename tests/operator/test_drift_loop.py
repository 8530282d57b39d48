"""The closed loop on the real API server with the local runtime and a tiny BERT: real
prepare, train, reference and drift steps (Evidently), real model servers and gateway.
Shifted traffic with feedback labels makes a drift check find drift; the retraining waits
for new labels, then exactly one starts however many drifted checks follow; its model
rolls out as a canary and is promoted; the user's objects keep their generation and spec
throughout."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from bertops.operator.kube import Kube
from tests.operator.conftest import reasons, wait_events
from tests.operator.serving_helpers import FEEDBACK_SECRET, SteadyClient, feedback_credentials
from tests.operator.test_local_runtime import dataset, training, tweets_csv
from tests.waiting import condition_of as condition
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
__all__ = ["tweets_csv"]  # the module fixture, shared with test_local_runtime

# Text of another kind than the tweets the model was trained on: long, non-ASCII, mostly
# unknown to the uncased English WordPiece vocabulary.
SHIFTED = [
    "市场研究显示，新能源汽车的销量在第三季度继续增长，分析人士认为价格战仍将持续。",  # noqa: RUF001
    "Ангарский завод объявил о модернизации производственных линий к концу года.",  # noqa: RUF001
    "ハイキングの途中で突然の雨に降られたが、山小屋の主人が温かいスープを出してくれた。",
    "El consejo municipal aprobó el presupuesto después de un largo debate nocturno.",
]


def deployment(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "bertops.io/v1alpha1",
        "kind": "BertDeployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "model": {"selector": {"family": "tiny", "policy": "latest"}},
            "serving": {
                "predictionLog": "hash",
                "maxBatchWaitMs": 2,
                "feedback": {"credentialsSecret": FEEDBACK_SECRET},
            },
            "rollout": {
                "steps": [{"weight": 50, "pauseSeconds": 1}],
                # Tiny models at chance disagree at random: this test is about the loop,
                # test_deployment_local and test_rollout_gates are about the gates.
                # Nor can they beat stable offline or on paired feedback: the judgment of
                # a retrained model has its own tests (test_rollout_judgment, the demo).
                "analysis": {
                    "intervalSeconds": 1,
                    "minRequests": 5,
                    "maxLatencyRatio": 50,
                    "offlineEvaluation": False,
                    "pairedGate": "off",
                },
            },
            "drift": {"intervalSeconds": 10, "windowSize": 60, "referenceSize": 60},
            "retrain": {
                "enabled": True,
                "cooldownSeconds": 3600,
                "includeFeedback": True,
                "minFeedbackRows": 30,
            },
        },
    }


def feedback_rows(dataset_body: dict[str, Any]) -> list[dict[str, Any]]:
    """The feedback rows a retraining dataset reads (its jsonl feedback source)."""
    extra = dataset_body["spec"]["additionalSources"]
    (source,) = [s for s in extra if "feedback" in s["uri"]]
    folder = Path(source["uri"].removeprefix("file://"))
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else [folder]
    return [json.loads(line) for path in files for line in path.read_text().splitlines()]


def status(kube: Kube, namespace: str) -> dict[str, Any]:
    return (kube.get("BertDeployment", namespace, "web") or {}).get("status") or {}


def user_objects(kube: Kube, namespace: str) -> dict[str, Any]:
    found = {}
    for kind, name in (
        ("BertDataset", "tweets"),
        ("BertTraining", "tiny"),
        ("BertDeployment", "web"),
    ):
        body = kube.get(kind, namespace, name) or {}
        found[kind] = (body["metadata"]["generation"], json.dumps(body["spec"], sort_keys=True))
    return found


def send_shifted(endpoint: str, rounds: int, labeler: dict[str, str]) -> tuple[int, int]:
    """Shifted texts through the gateway, each answer labelled by feedback: by the
    labeler (with its credential), except every tenth, which comes from a poisoner that
    labels it wrongly and has no credential. Returns (labelled, refused with 401)."""
    labelled, refused = 0, 0
    with httpx.Client(timeout=30) as client:
        for i in range(rounds):
            poisoner = i % 10 == 0
            text = f"{'poison' if poisoner else 'shifted'} {SHIFTED[i % len(SHIFTED)]} #{i}"
            answer = client.post(
                endpoint + "/predict",
                json={"texts": [text]},
                headers={"x-bertops-key": uuid.uuid4().hex},
            )
            assert answer.status_code == 200, answer.text
            request_id = answer.headers["x-request-id"]
            label = ("negative", "neutral", "positive")[(i + poisoner) % 3]
            fed = client.post(
                endpoint + "/feedback",
                json={"requestId": request_id, "label": label},
                headers={} if poisoner else labeler,
            )
            labelled += fed.status_code == 200
            refused += fed.status_code == 401
    return labelled, refused


def test_drift_retrains_once_and_the_new_model_is_promoted(
    kube_layer: Kube, namespace: str, start_operator: Any, tweets_csv: Path, tmp_path: Path
) -> None:
    start_operator(namespace)
    labeler = feedback_credentials(kube_layer, namespace)
    kube_layer.create(dataset(namespace, tweets_csv))
    kube_layer.create(training(namespace, epochs=1))
    kube_layer.create(deployment(namespace))
    before = None
    ready = wait_for(
        lambda: (
            (s := status(kube_layer, namespace)).get("drift", {}).get("referenceModel") == "tiny-v1"
            and s.get("endpoint")
            and s
        ),
        timeout=420,
        what="tiny-v1 serving with its reference sample",
    )
    before = user_objects(kube_layer, namespace)
    assert ready["drift"]["referenceRows"] == 27  # the validation split: 15% of 180 rows
    drifted_condition = condition({"status": ready}, "Drifted")
    assert drifted_condition is not None
    assert drifted_condition["status"] == "Unknown"

    assert send_shifted(ready["endpoint"], 70, labeler) == (63, 7)
    drifted = wait_for(
        lambda: (
            (c := condition(kube_layer.get("BertDeployment", namespace, "web"), "Drifted"))
            and c["reason"] == "DriftDetected"
            and status(kube_layer, namespace)
        ),
        timeout=120,
        what="Drifted=True",
    )
    drift = drifted["drift"]
    assert drift["drifted"] is True and drift["score"] >= 0.3 and drift["windowRows"] == 60
    assert Path(drift["reportUri"]).is_file() and drift["signals"]["nonAscii"] is True

    # The labels came before the drift was found: retraining waits for 30 new ones (it
    # used to snapshot the feedback at the moment of the drift).
    waiting = drifted.get("retrains", {}).get("waiting") or {}
    assert waiting.get("needed") == 30, drifted.get("retrains")
    assert kube_layer.get("BertTraining", namespace, "web-retrain-1") is None
    assert "retraining waits for feedback" in drift["message"]
    assert send_shifted(ready["endpoint"], 35, labeler) == (31, 4)

    client = SteadyClient(ready["endpoint"], pause=0.05).start()
    try:
        promoted = wait_for(
            lambda: (
                (s := status(kube_layer, namespace)).get("stableModel") == "web-retrain-1" and s
            ),
            timeout=600,
            what="web-retrain-1 promoted",
        )
        serial = promoted["drift"].get("serial", 0)
        # Drift checks go on (the new stable gets its own reference, then checks).
        wait_for(
            lambda: status(kube_layer, namespace)["drift"].get("serial", 0) >= serial + 1,
            timeout=120,
            what="another monitor step after the promotion",
        )
    finally:
        client.stop()
    final = status(kube_layer, namespace)
    retrains = final["retrains"]
    assert retrains["count"] == 1 and retrains.get("active") is None
    (record,) = retrains["history"]
    assert record["outcome"] == "Promoted" and record["training"] == "web-retrain-1"
    assert record["driftScore"] == pytest.approx(drift["score"], abs=1e-3)
    assert record["reportUri"] == drift["reportUri"]
    assert [h["outcome"] for h in final["history"]] == ["Promoted"]

    new_dataset = kube_layer.get("BertDataset", namespace, "web-retrain-1") or {}
    assert new_dataset["metadata"]["labels"]["bertops.io/retrained-for"] == "web"
    assert new_dataset["status"]["rows"]["total"] > 180  # the tweets plus the feedback
    # What the retraining learnt from: the labeler's rows only; the poisoner's flipped
    # labels (a tenth of the traffic, no credential) never reached the feedback log.
    fed = feedback_rows(new_dataset)
    assert len(fed) == 63 + 31 and {row["client"] for row in fed} == {"labeler"}
    assert not any(str(row["text"]).startswith("poison") for row in fed)
    trigger = (kube_layer.get("BertTraining", namespace, "web-retrain-1") or {})["spec"]["trigger"]
    assert trigger["driftScore"] == pytest.approx(drift["score"], abs=1e-3)
    assert trigger["deployment"] == "web"

    events = wait_events(
        kube_layer,
        namespace,
        "web",
        lambda seen: {"DriftDetected", "RetrainPromoted", "Promoted"} <= reasons(seen),
        "the retraining's Events",
    )
    assert [e["reason"] for e in events].count("RetrainStarted") == 1
    assert user_objects(kube_layer, namespace) == before  # no spec written, so Argo CD stays Synced
