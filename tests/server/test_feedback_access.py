"""Feedback is a privilege: the gateway takes it only from clients it knows (a folder of
bearer tokens, as a mounted Secret has it), anonymous feedback is refused unless switched
on, each client has a label rate and a byte budget, and a client sending flipped labels
without a credential gets nothing into the feedback log. Real gateway and model server
on loopback, clients as users have them (httpx)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from bertops.api.routes import Routes
from bertops.server.gateway.access import FeedbackAccess, read_credentials
from bertops.server.gateway.app import Gateway
from tests.server.conftest import LiveServer
from tests.server.helpers import GatewayUrl, Stub, serve_gateway
from tests.server.test_feedback_log import rows

LABELS = ["positive", "negative", "neutral"]
FLIP = {"positive": "negative", "negative": "positive", "neutral": "positive"}


def credentials(folder: Path, **clients: str) -> Path:
    """A folder laid out as a mounted Secret: one file per key, plus the kubelet's dot
    entries (which name no client)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "..data").mkdir(exist_ok=True)
    for name, token in clients.items():
        (folder / name).write_text(token)
    return folder


def start(
    serve: Callable[..., LiveServer], access: FeedbackAccess, log: Path | None = None
) -> GatewayUrl:
    stub = serve(Stub("v1", "positive").app()).url
    table = Routes.model_validate({"stable": {"name": "v1", "url": stub, "labels": LABELS}})
    return serve_gateway(serve, Gateway(table, feedback_access=access, feedback_log=log))


def answer(client: httpx.Client, text: str = "great food") -> str:
    response = client.post("/predict", json={"texts": [text]})
    assert response.status_code == 200
    return response.headers["x-request-id"]


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_feedback_is_off_unless_a_credential_or_anonymous_is_configured(
    serve: Callable[..., LiveServer],
) -> None:
    url = start(serve, FeedbackAccess())
    with httpx.Client(base_url=url) as client:
        refused = client.post("/feedback", json={"requestId": answer(client), "label": "positive"})
        metrics = httpx.get(url.metrics + "/metrics").text
    assert refused.status_code == 403
    assert "credentialsSecret" in refused.json()["error"]
    assert 'bertops_gateway_feedback_rejected_total{reason="forbidden"} 1.0' in metrics


def test_only_known_clients_teach_and_a_secret_edit_takes_effect(
    serve: Callable[..., LiveServer], tmp_path: Path
) -> None:
    alice, bob = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    folder = credentials(tmp_path / "creds", alice=alice, weak="short")
    now = [0.0]
    log = tmp_path / "feedback.jsonl"
    url = start(serve, FeedbackAccess(folder, clock=lambda: now[0]), log)
    with httpx.Client(base_url=url) as client:
        rid = answer(client)
        label = {"requestId": rid, "label": "positive"}
        missing = client.post("/feedback", json=label)
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith(
            "Bearer"
        )
        assert client.post("/feedback", json=label, headers=bearer("short")).status_code == 401
        assert client.post("/feedback", json=label, headers=bearer(bob)).status_code == 401
        ok = client.post("/feedback", json=label, headers=bearer(alice))
        assert ok.json() == {"accepted": 1, "duplicates": 0}
        # The Secret changes: alice revoked, bob added; seen once the folder is re-read.
        (folder / "alice").unlink()
        (folder / "bob").write_text(bob + "\n")
        now[0] = 10
        second = {"requestId": answer(client), "label": "negative"}
        assert client.post("/feedback", json=second, headers=bearer(alice)).status_code == 401
        assert client.post("/feedback", json=second, headers=bearer(bob)).status_code == 200
    written = rows(log, 2)
    assert [(r["client"], r["label"]) for r in written] == [
        ("alice", "positive"),
        ("bob", "negative"),
    ]
    assert read_credentials(folder).keys() == {"bob"}  # the short token names no client


def test_each_client_has_a_label_rate_and_a_byte_budget(
    serve: Callable[..., LiveServer], tmp_path: Path
) -> None:
    tokens = {"alice": secrets.token_urlsafe(24), "carol": secrets.token_urlsafe(24)}
    folder = credentials(tmp_path / "creds", **tokens)
    url = start(serve, FeedbackAccess(folder, labels_per_minute=5, bytes_per_hour=4096))
    with httpx.Client(base_url=url) as client:
        ids = [answer(client, f"text {i}") for i in range(8)]
        sent = [
            client.post(
                "/feedback",
                json={"requestId": rid, "label": "positive"},
                headers=bearer(tokens["alice"]),
            )
            for rid in ids[:6]
        ]
        assert [s.status_code for s in sent] == [200] * 5 + [429]
        assert 1 <= int(sent[-1].headers["retry-after"]) <= 60
        assert "5 labels per minute" in sent[-1].json()["error"]
        # Another client has its own budget; a large body spends carol's bytes.
        carol = bearer(tokens["carol"])
        padded = {"requestId": ids[6], "label": "positive", "note": "x" * 3000}
        assert client.post("/feedback", json=padded, headers=carol).status_code == 200
        over = client.post("/feedback", json=padded | {"requestId": ids[7]}, headers=carol)
        assert over.status_code == 429 and "4096 bytes per hour" in over.json()["error"]
        metrics = httpx.get(url.metrics + "/metrics").text
    assert 'bertops_gateway_feedback_rejected_total{reason="rate_limited"} 2.0' in metrics


def test_anonymous_feedback_when_switched_on_is_budgeted_per_address(
    serve: Callable[..., LiveServer], tmp_path: Path
) -> None:
    log = tmp_path / "feedback.jsonl"
    url = start(serve, FeedbackAccess(anonymous=True, labels_per_minute=2), log)
    with httpx.Client(base_url=url) as client:
        codes = [
            client.post("/feedback", json={"requestId": answer(client), "label": "neutral"})
            for _ in range(3)
        ]
    assert [c.status_code for c in codes] == [200, 200, 429]
    assert {r["client"] for r in rows(log, 2)} == {"anonymous:127.0.0.1"}


@pytest.mark.parametrize("requests", [200])
def test_a_client_sending_flipped_labels_without_a_credential_teaches_nothing(
    serve: Callable[..., LiveServer], tmp_path: Path, requests: int
) -> None:
    """The poisoning case: a tenth of the traffic comes from a client that labels every
    answer with the wrong label. It can ask (inference is public) but not teach."""
    labeler = secrets.token_urlsafe(24)
    log = tmp_path / "feedback.jsonl"
    url = start(serve, FeedbackAccess(credentials(tmp_path / "creds", labeler=labeler)), log)
    codes: dict[str, list[int]] = {"honest": [], "poisoner": []}
    with httpx.Client(base_url=url) as client:
        for i in range(requests):
            who = "poisoner" if i % 10 == 0 else "honest"
            rid = answer(client, f"{who} text {i}")
            truth = "positive"
            label = FLIP[truth] if who == "poisoner" else truth
            # The poisoner tries what it can: no header, a guessed token, the id's own value.
            headers = (
                {}
                if i % 30 == 0
                else bearer(secrets.token_urlsafe(24) if i % 20 == 0 else rid)
                if who == "poisoner"
                else bearer(labeler)
            )
            sent = client.post(
                "/feedback", json={"requestId": rid, "label": label}, headers=headers
            )
            codes[who].append(sent.status_code)
        metrics = httpx.get(url.metrics + "/metrics").text
    assert set(codes["poisoner"]) == {401} and len(codes["poisoner"]) == requests // 10
    assert set(codes["honest"]) == {200}
    rows(log, len(codes["honest"]))  # the writer is a background thread
    time.sleep(0.2)  # nothing more arrives late
    written = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(written) == len(codes["honest"])
    assert {r["client"] for r in written} == {"labeler"}
    assert not any(str(r["text"]).startswith("poisoner") for r in written)
    assert all(r["label"] == "positive" for r in written)
    rejected = (
        f'bertops_gateway_feedback_rejected_total{{reason="unauthenticated"}} {requests // 10}.0'
    )
    assert rejected in metrics
