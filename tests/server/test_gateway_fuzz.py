"""Fuzzing the gateway's /feedback with hypothesis: 200 generated bodies (arbitrary JSON,
deep nesting, raw bytes, feedback-shaped objects and lists with hostile fields) against
the real ASGI gateway with a feedback log. The property: no body gets a 5xx, every
refusal carries an error message, and afterwards the gateway is live and still answers
well-formed feedback (404 for an id it never issued). The backend is never called:
feedback is the gateway's own."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from bertops.server.gateway.access import FeedbackAccess
from bertops.server.gateway.app import create_gateway
from tests.server.test_fuzz import json_values, maybe, texts
from tests.server.test_gateway import routes

FEEDBACK_CASES = 200

feedback_items = st.fixed_dictionaries(
    {},
    optional={
        "requestId": maybe(st.one_of(texts, st.from_regex(r"[0-9a-f]{32}", fullmatch=True))),
        "label": maybe(st.sampled_from(["positive", "negative", "neutral", ""])),
        "labels": maybe(st.lists(texts, max_size=4)),
        "index": maybe(st.integers(-3, 10**20)),
    },
)
bodies = st.one_of(
    feedback_items.map(lambda d: json.dumps(d).encode()),
    st.lists(feedback_items, max_size=5).map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=64),
    st.integers(min_value=1, max_value=200_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(min_value=1, max_value=50_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
)


def test_no_feedback_body_gets_a_5xx(tmp_path: Path) -> None:
    app = create_gateway(
        routes("http://127.0.0.1:9"),
        feedback_log=tmp_path / "feedback.jsonl",
        feedback_access=FeedbackAccess.open(),
    )
    with TestClient(app) as client:

        @settings(
            max_examples=FEEDBACK_CASES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(body=bodies)
        def post(body: bytes) -> None:
            answer = client.post("/feedback", content=body)
            assert answer.status_code < 500, (answer.status_code, answer.text[:200])
            if answer.status_code >= 400:
                assert "error" in answer.json()

        post()
        assert client.get("/healthz").status_code == 200
        unknown = client.post("/feedback", json={"requestId": "f" * 32, "label": "positive"})
        assert unknown.status_code == 404, unknown.text
