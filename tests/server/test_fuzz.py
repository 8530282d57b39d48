"""Fuzzing the model server's request handling with hypothesis: 300 generated requests
(arbitrary JSON or raw bytes, OIP v2 and /predict shapes with hostile fields, texts with
lone surrogates and control characters, arbitrary request-id, variant and content-type
headers) against the real ASGI app serving the tiny model, with a prediction log; then
200 bodies in the binary tensor data extension (well-formed ones beside hostile
Inference-Header-Content-Length values, binary_data_size values, element lengths,
invalid UTF-8 and binary output flags).

The property: no request gets a 5xx, a 200 in binary form decodes, and afterwards the
server is still ready and its prediction log writer still alive. Runs in well under 30 s
on one core.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from bertops.server import binary
from bertops.server.app import ModelServer, ServerSettings
from bertops.server.model import ServedModel
from tests.server.test_server_hardening import wait_until_ready

FUZZ_CASES = 300
BINARY_FUZZ_CASES = 200

# Characters that broke or could break something: lone surrogates, CR/LF, NUL, BOM,
# non-Latin-1 text, beside arbitrary code points.
NASTY = ["\ud800", "\udfff", "\r", "\n", "\x00", "\ufeff", "\u2028", "é", "日本", "🙂", '"', "\\"]
texts = st.lists(st.one_of(st.characters(), st.sampled_from(NASTY)), max_size=12).map("".join)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), texts)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=12,
)


def maybe(
    strategy: st.SearchStrategy[Any], junk: st.SearchStrategy[Any] = json_values
) -> st.SearchStrategy[Any]:
    """Mostly a plausible value, sometimes any JSON value in its place."""
    return st.one_of(strategy, strategy, junk)


text_lists = st.lists(texts, max_size=6)
shapes = st.one_of(
    text_lists.map(lambda t: [len(t)]),
    st.lists(st.integers(min_value=-2, max_value=10**30), max_size=4),
)
tensors = st.fixed_dictionaries(
    {
        "name": maybe(st.sampled_from(["text", "t"])),
        "datatype": maybe(st.sampled_from(["BYTES", "FP32"])),
        "shape": maybe(shapes),
        "data": maybe(st.one_of(text_lists, st.lists(text_lists, max_size=3))),
    }
)
infer_bodies = st.fixed_dictionaries(
    {"inputs": maybe(st.lists(tensors, min_size=1, max_size=2))},
    optional={
        "id": maybe(texts),
        "outputs": maybe(
            st.lists(
                st.fixed_dictionaries(
                    {"name": maybe(st.sampled_from(["label", "score", "probabilities", "x"]))}
                ),
                max_size=3,
            )
        ),
        "parameters": json_values,
    },
)
predict_bodies = st.fixed_dictionaries(
    {"texts": maybe(text_lists)}, optional={"extra": json_values}
)


# Well-formed requests (with arbitrary, surrogate-free texts) so that a fair share of the
# cases reaches the model, the response encoder and the prediction log.
clean_lists = st.lists(st.text(max_size=12), min_size=1, max_size=6)
ids = st.one_of(st.none(), st.from_regex(r"[ -~]{0,20}", fullmatch=True), texts)
well_formed = st.one_of(
    clean_lists.map(lambda t: {"texts": t}),
    st.tuples(clean_lists, ids).map(
        lambda c: {
            "id": c[1],
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(c[0])], "data": c[0]}],
        }
    ),
)


def encoded(document: Any) -> bytes:
    # json.dumps escapes lone surrogates (\ud800), as a client's serializer would;
    # allow_nan lets NaN/Infinity through, which Python's json.loads accepts.
    return json.dumps(document).encode()


bodies = st.one_of(
    well_formed.map(encoded),
    well_formed.map(encoded),
    infer_bodies.map(encoded),
    predict_bodies.map(encoded),
    json_values.map(encoded),
    st.binary(max_size=64),
    st.integers(min_value=1, max_value=3000).map(lambda depth: b"[" * depth + b"]" * depth),
)
header_values = st.one_of(
    st.binary(max_size=40), texts.map(lambda t: t.encode("utf-8", "surrogatepass"))
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "x-request-id": st.one_of(header_values, st.from_regex(rb"[!-~]{1,20}", fullmatch=True)),
        "x-bertops-variant": header_values,
        "content-type": st.sampled_from([b"application/json", b"text/plain", b"\xff"]),
    },
)
paths = st.sampled_from(
    ["/predict", "/v2/models/tiny-v1/infer", "/v2/models/tiny-v1/versions/tiny-v1/infer"]
)


@pytest.fixture(scope="module")
def fuzz_server(
    tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ModelServer, TestClient]]:
    log_path = tmp_path_factory.mktemp("fuzz") / "predictions.jsonl"
    server = ModelServer(
        ServedModel(str(tiny_artifact), threads=1),
        ServerSettings(
            max_texts_per_request=4,
            max_chars=10,
            max_batch_wait_ms=0,
            prediction_log="text",
            prediction_log_path=log_path,
        ),
    )
    with TestClient(server.app) as client:
        wait_until_ready(client)
        yield server, client


@settings(
    max_examples=FUZZ_CASES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(path=paths, body=bodies, request_headers=headers)
def test_no_request_gets_a_5xx(
    fuzz_server: tuple[ModelServer, TestClient],
    path: str,
    body: bytes,
    request_headers: dict[str, bytes],
) -> None:
    _, client = fuzz_server
    # Raw bytes under str names, on purpose: header values no client library would build.
    answer = client.post(path, content=body, headers=request_headers)  # type: ignore[arg-type]
    event(f"status {answer.status_code}")  # --hypothesis-show-statistics: is 200 reached?
    assert answer.status_code < 500, (answer.status_code, answer.text)
    assert "error" in answer.json() or answer.status_code == 200


# Binary elements: UTF-8 texts (lone surrogates encoded as a careless client would) and
# arbitrary bytes, mostly well framed, sometimes any bytes in the frame's place.
elements = st.lists(
    st.one_of(texts.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=12)),
    max_size=6,
)
flags = maybe(st.booleans())
binary_outputs = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["label", "score", "probabilities"])},
        optional={"parameters": maybe(st.fixed_dictionaries({}, optional={"binary_data": flags}))},
    ),
    max_size=3,
)

clean_outputs = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.sampled_from(["label", "score", "probabilities"]),
            "parameters": st.fixed_dictionaries({"binary_data": st.booleans()}),
        }
    ),
    max_size=3,
)


@st.composite
def binary_bodies(draw: st.DrawFn, clean: bool = False) -> tuple[bytes, bytes]:
    """(body, Inference-Header-Content-Length value) of a binary inference request; with
    ``clean``, a well-formed one, so that a fair share reaches the model and the encoder."""
    if clean:
        items = [t.encode() for t in draw(st.lists(st.text(max_size=10), min_size=1, max_size=4))]
        data = binary.encode_bytes(items)
        described = {"name": "text", "datatype": "BYTES", "shape": [len(items)]}
        request: dict[str, Any] = {
            "inputs": [described | {"parameters": {"binary_data_size": len(data)}}],
            "parameters": {"binary_data_output": draw(st.booleans())},
        }
        if draw(st.booleans()):
            request["outputs"] = draw(clean_outputs)
        head = encoded(request)
        return head + data, str(len(head)).encode()
    items = draw(elements)
    data = draw(st.one_of(st.just(binary.encode_bytes(items)), st.binary(max_size=40)))
    size = draw(st.one_of(st.just(len(data)), st.integers(-3, 60), json_values))
    tensor: dict[str, Any] = {
        "name": "text",
        "datatype": draw(maybe(st.just("BYTES"))),
        "shape": draw(maybe(st.just([len(items)]), shapes)),
        "parameters": draw(maybe(st.just({"binary_data_size": size}))),
    }
    if draw(st.integers(0, 9)) == 0:
        tensor["data"] = draw(text_lists)
    document: dict[str, Any] = {"inputs": [tensor]}
    if draw(st.booleans()):
        document["parameters"] = draw(maybe(st.fixed_dictionaries({"binary_data_output": flags})))
    if draw(st.booleans()):
        document["outputs"] = draw(binary_outputs)
    head = encoded(document)
    length = draw(
        st.one_of(
            st.just(str(len(head)).encode()),
            st.just(str(len(head)).encode()),
            st.integers(-10, 10**12).map(lambda n: str(n).encode()),
            header_values,
        )
    )
    return head + data, length


@settings(
    max_examples=BINARY_FUZZ_CASES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    path=st.sampled_from(["/v2/models/tiny-v1/infer", "/v2/models/tiny-v1/versions/tiny-v1/infer"]),
    request=st.one_of(binary_bodies(clean=True), binary_bodies()),
)
def test_no_binary_request_gets_a_5xx(
    fuzz_server: tuple[ModelServer, TestClient], path: str, request: tuple[bytes, bytes]
) -> None:
    _, client = fuzz_server
    body, length = request
    answer = client.post(path, content=body, headers={binary.HEADER.encode(): length})
    event(f"status {answer.status_code}")
    assert answer.status_code < 500, (answer.status_code, answer.text)
    if answer.status_code != 200:
        assert "error" in answer.json()
    elif binary.HEADER in answer.headers:
        size = int(answer.headers[binary.HEADER])
        binary.decode_outputs(json.loads(answer.content[:size]), answer.content[size:])
    else:
        assert isinstance(answer.json()["outputs"], list)


def test_the_server_is_still_healthy_after_the_fuzz(
    fuzz_server: tuple[ModelServer, TestClient],
) -> None:
    server, client = fuzz_server
    assert client.get("/v2/health/ready").status_code == 200
    assert client.post("/predict", json={"texts": ["calm"]}).status_code == 200
    assert server.prediction_log is not None and server.prediction_log._thread.is_alive()
