"""The binary tensor data extension of OIP v2, pure and over real HTTP: the codec in
bertops.server.binary (round trips, every malformed length refused, agreement with
tritonclient's own serializer and answer reader), then a widely used OIP v2 client,
tritonclient.http, against a real model server on loopback in both input modes and both
output modes, hostile binary bodies answered 400/413 with a clear message, and the same
client through the gateway (body and header passed through, predictions still counted and
feedback still checked)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException, serialize_byte_tensor

from bertops.api.routes import Routes
from bertops.server import binary
from bertops.server.app import ServerSettings, create_app
from bertops.server.gateway.access import FeedbackAccess
from bertops.server.gateway.app import Gateway, create_gateway
from bertops.server.model import ServedModel
from tests.server.artifacts import LABELS
from tests.server.conftest import LiveServer, wait_ready
from tests.server.helpers import metric, serve_gateway

TEXTS = ["great movie", "terrible, awful", "日本語 🙂", ""]

# -- the codec ------------------------------------------------------------------------


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.binary(max_size=20), max_size=10))
def test_bytes_round_trip_and_match_tritonclient(elements: list[bytes]) -> None:
    encoded = binary.encode_bytes(elements)
    assert binary.decode_bytes(encoded) == elements
    if elements:  # the real client's serializer writes the same bytes
        ours = serialize_byte_tensor(np.array([*elements, b""], dtype=np.object_)).item()
        assert ours == encoded + b"\x00\x00\x00\x00"


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=64), st.one_of(st.none(), st.integers(min_value=0, max_value=5)))
def test_decoding_arbitrary_bytes_fails_only_with_a_format_error(
    raw: bytes, most: int | None
) -> None:
    try:
        elements = binary.decode_bytes(raw, most)
    except binary.BinaryFormatError:
        return  # the only exception allowed; every other one fails the test
    assert binary.encode_bytes(elements) == raw


def test_malformed_bytes_tensors_are_refused_with_a_reason() -> None:
    with pytest.raises(binary.BinaryFormatError, match="too few for its 4-byte length"):
        binary.decode_bytes(b"\x01\x00")
    with pytest.raises(binary.BinaryFormatError, match="claims 4294967295 bytes but only 1"):
        binary.decode_bytes(b"\xff\xff\xff\xffx")
    with pytest.raises(binary.TooManyElementsError, match="more than 2 elements"):
        binary.decode_bytes(binary.encode_bytes([b"a", b"b", b"c"]), 2)
    with pytest.raises(binary.BinaryFormatError, match="no multiple of 4"):
        binary.decode_floats(b"\x00" * 6)


@pytest.mark.parametrize(
    ("values", "size", "message"),
    [
        (["-1"], 10, "non-negative decimal integer"),
        (["abc"], 10, "non-negative decimal integer"),
        (["+5"], 10, "non-negative decimal integer"),
        (["١٢"], 10, "non-negative decimal integer"),  # Unicode digits int() would take
        (["9" * 1000], 10, "non-negative decimal integer"),
        (["99999999"], 10, "is 99999999 but the body has only 10 bytes"),
        (["11"], 10, "is 11 but the body has only 10 bytes"),
        (["0"], 10, "the JSON header cannot be empty"),
        (["3", "3"], 10, "given 2 times"),
    ],
)
def test_bad_header_lengths_are_refused(values: list[str], size: int, message: str) -> None:
    with pytest.raises(binary.BinaryFormatError, match=message):
        binary.header_length(values, size)


def test_header_lengths_and_slices() -> None:
    assert binary.header_length([], 10) is None
    assert binary.header_length([" 10 "], 10) == 10  # all JSON, no binary part: allowed
    assert binary.split_body(b'{"a":1}xyz', 7) == (b'{"a":1}', b"xyz")
    assert binary.slice_tensors([2, None, 1], b"abc") == [b"ab", None, b"c"]
    with pytest.raises(binary.BinaryFormatError, match="add up to 2 bytes but the body holds 3"):
        binary.slice_tensors([2], b"abc")
    with pytest.raises(binary.BinaryFormatError, match="no binary data"):
        binary.slice_tensors([2], None)
    for bad in (-1, True, "2", 1.5):
        with pytest.raises(binary.BinaryFormatError, match="non-negative integer"):
            binary.binary_size({"parameters": {"binary_data_size": bad}}, "input")


def test_encoded_outputs_read_back_by_tritonclient() -> None:
    document = {
        "model_name": "m",
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["négatif", "ok"]},
            {"name": "score", "datatype": "FP32", "shape": [2], "data": [0.5, 0.25]},
            {"name": "p", "datatype": "FP32", "shape": [2, 2], "data": [0.5, 0.5, 0.75, 0.25]},
        ],
    }
    body, length = binary.encode_outputs(document, {"label", "p"})
    assert length is not None
    head = json.loads(body[:length])
    assert head["outputs"][0]["parameters"] == {"binary_data_size": 2 * 4 + 8 + 2}
    assert "data" not in head["outputs"][0] and head["outputs"][1]["data"] == [0.5, 0.25]
    result = triton.InferResult.from_response_body(body, header_length=length)
    assert result.as_numpy("label").tolist() == ["négatif".encode(), b"ok"]
    assert result.as_numpy("score").tolist() == [0.5, 0.25]
    assert result.as_numpy("p").tolist() == [[0.5, 0.5], [0.75, 0.25]]
    assert binary.decode_outputs(head, body[length:]) == {
        "label": ["négatif".encode(), b"ok"],
        "p": [0.5, 0.5, 0.75, 0.25],
    }
    assert binary.encode_outputs(document, ()) == (
        json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode(),
        None,
    )


# -- a real client against a real server ----------------------------------------------


@pytest.fixture(scope="module")
def server_url(tiny_artifact: Path) -> Iterator[str]:
    app = create_app(
        ServedModel(str(tiny_artifact), threads=1),
        ServerSettings(max_texts_per_request=8, max_chars=50),
    )
    server = LiveServer(app).start()
    wait_ready(server.url)
    yield server.url
    server.stop()


def texts_input(texts: list[str], binary_data: bool) -> triton.InferInput:
    tensor = triton.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(
        np.array([t.encode() for t in texts], dtype=np.object_), binary_data=binary_data
    )
    return tensor


def infer(
    url: str, texts: list[str], binary_in: bool, outputs: dict[str, bool] | None = None
) -> triton.InferResult:
    """One inference with tritonclient; ``outputs`` maps names to binary_data (None:
    the client's default, which asks for every output in binary form)."""
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    try:
        requested = (
            None
            if outputs is None
            else [
                triton.InferRequestedOutput(name, binary_data=flag)
                for name, flag in outputs.items()
            ]
        )
        return client.infer("tiny-v1", [texts_input(texts, binary_in)], outputs=requested)
    finally:
        client.close()


def expected(url: str, texts: list[str]) -> dict[str, Any]:
    """The plain-JSON answer, by output name, to compare the binary forms with."""
    answer = httpx.post(
        url + "/v2/models/tiny-v1/infer",
        json={
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]
        },
    )
    assert answer.status_code == 200 and binary.HEADER not in answer.headers
    return {o["name"]: o for o in answer.json()["outputs"]}


def check_answer(
    result: triton.InferResult, want: dict[str, Any], binary_outputs: set[str]
) -> None:
    described = {o["name"]: o for o in result.get_response()["outputs"]}
    for name, output in want.items():
        if name not in described:
            continue
        assert ("binary_data_size" in described[name].get("parameters", {})) == (
            name in binary_outputs
        ), name
        got = result.as_numpy(name)
        assert list(got.shape) == output["shape"]
        flat = got.reshape(-1).tolist()
        if name == "label":
            assert [x.decode() if isinstance(x, bytes) else x for x in flat] == output["data"]
        else:  # FP32 on the wire: equal to float32 precision
            assert flat == pytest.approx(output["data"], rel=1e-6)


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize(
    "outputs",
    [
        None,
        {"label": True, "score": True},
        {"label": False, "probabilities": False},
        {"label": True, "score": False, "probabilities": True},
    ],
    ids=["default", "binary-out", "json-out", "mixed-out"],
)
def test_tritonclient_against_the_model_server(
    server_url: str, binary_in: bool, outputs: dict[str, bool] | None
) -> None:
    want = expected(server_url, TEXTS)
    result = infer(server_url, TEXTS, binary_in, outputs)
    binary_outputs = set(want) if outputs is None else {n for n, f in outputs.items() if f}
    check_answer(result, want, binary_outputs)
    assert result.get_response()["model_name"] == "tiny-v1"
    labels = result.as_numpy("label").reshape(-1).tolist()  # bytes when binary, else str
    assert {x.decode() if isinstance(x, bytes) else x for x in labels} <= set(LABELS)


def test_server_metadata_advertises_the_extension(server_url: str) -> None:
    client = triton.InferenceServerClient(server_url.removeprefix("http://"))
    try:
        assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
        assert client.is_model_ready("tiny-v1")
    finally:
        client.close()


def test_the_client_hears_a_clear_400_for_text_that_is_not_utf8(server_url: str) -> None:
    client = triton.InferenceServerClient(server_url.removeprefix("http://"))
    tensor = triton.InferInput("text", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([b"fine", b"\xed\xa0\x80"], dtype=np.object_))
    try:
        with pytest.raises(InferenceServerException) as raised:
            client.infer("tiny-v1", [tensor])
    finally:
        client.close()
    assert raised.value.status() == "400"
    assert "input 'text' element 1 is not valid UTF-8 text" in raised.value.message()


def post_binary(
    url: str, header: dict[str, Any], data: bytes, length: str | None = None
) -> httpx.Response:
    head = json.dumps(header).encode()
    return httpx.post(
        url + "/v2/models/tiny-v1/infer",
        content=head + data,
        headers={binary.HEADER: length if length is not None else str(len(head))},
    )


def binary_request(n: int, size: int | None = None, **extra: Any) -> dict[str, Any]:
    tensor = {
        "name": "text",
        "datatype": "BYTES",
        "shape": [n],
        "parameters": {"binary_data_size": size},
    }
    return {"inputs": [tensor | extra]}


@pytest.mark.parametrize(
    ("header", "data", "length", "status", "message"),
    [
        (binary_request(1, 5), b"\x01\x00\x00\x00a", "-1", 400, "non-negative decimal integer"),
        (binary_request(1, 5), b"\x01\x00\x00\x00a", "999999", 400, "the body has only"),
        (binary_request(1, 5), b"\x09\x00\x00\x00a", None, 400, "claims 9 bytes but only 1"),
        (binary_request(1, 3), b"\x01\x00\x00\x00a", None, 400, "add up to 3 bytes"),
        (binary_request(1, 2), b"\x01\x00", None, 400, "too few for its 4-byte length"),
        (binary_request(1, 5), b"\x01\x00\x00\x00\xff", None, 400, "not valid UTF-8"),
        (binary_request(1, 5, data=["a"]), b"\x01\x00\x00\x00a", None, 400, "both JSON data"),
        (binary_request(1, -5), b"", None, 400, "non-negative integer"),
        (binary_request(2, 5), b"\x01\x00\x00\x00a", None, 400, "shape holds 2 elements"),
        (binary_request(9, 36), b"\x00\x00\x00\x00" * 9, None, 413, "more than 8 elements"),
        (
            binary_request(1, 5) | {"parameters": {"binary_data_output": "yes"}},
            b"\x01\x00\x00\x00a",
            None,
            400,
            "binary_data_output must be true or false",
        ),
        (
            binary_request(1, 5) | {"outputs": [{"name": "label", "parameters": []}]},
            b"\x01\x00\x00\x00a",
            None,
            400,
            "output 'label' parameters must be an object",
        ),
    ],
)
def test_hostile_binary_bodies_get_a_clear_4xx(
    server_url: str,
    header: dict[str, Any],
    data: bytes,
    length: str | None,
    status: int,
    message: str,
) -> None:
    answer = post_binary(server_url, header, data, length)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]
    assert binary.HEADER not in answer.headers  # errors are plain JSON


def test_binary_data_size_without_the_header_is_refused(server_url: str) -> None:
    answer = httpx.post(server_url + "/v2/models/tiny-v1/infer", json=binary_request(1, 5))
    assert answer.status_code == 400 and "no binary data" in answer.json()["error"]


# -- through the gateway --------------------------------------------------------------


@pytest.fixture
def gateway_url(serve: Callable[..., LiveServer], server_url: str) -> str:
    """A gateway with the model server as stable and, mirrored, as shadow."""
    backend = {"url": server_url, "model": "tiny-v1"}
    table = Routes.model_validate(
        {"stable": backend | {"name": "tiny-v1"}, "shadow": backend | {"name": "shadow"}}
    )
    return serve_gateway(
        serve, Gateway(table, expose_headers=True, feedback_access=FeedbackAccess.open())
    )


def predictions(gateway_url: str, variant: str) -> float:
    name = "bertops_gateway_predictions_total"
    return sum(metric(gateway_url, name, variant=variant, label=label) for label in LABELS)


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
def test_tritonclient_through_the_gateway(
    server_url: str, gateway_url: str, binary_in: bool
) -> None:
    want = expected(server_url, TEXTS)
    check_answer(infer(gateway_url, TEXTS, binary_in), want, set(want))
    mixed = {"label": True, "score": False}
    check_answer(infer(gateway_url, TEXTS, binary_in, mixed), want, {"label"})
    # The gateway read the labels out of the binary answers, and so did the shadow's
    # mirror (it got the same body and header): both counted.
    assert predictions(gateway_url, "stable") == 2 * len(TEXTS)
    deadline = time.monotonic() + 30
    while predictions(gateway_url, "shadow") < 2 * len(TEXTS) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert predictions(gateway_url, "shadow") == 2 * len(TEXTS)


def test_gateway_feedback_knows_labels_of_binary_answers(gateway_url: str) -> None:
    data = binary.encode_bytes([b"great", b"awful"])
    request = binary_request(2, len(data)) | {"parameters": {"binary_data_output": True}}
    answer = post_binary(gateway_url, request, data)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == binary.CONTENT_TYPE
    length = int(answer.headers[binary.HEADER])
    decoded = binary.decode_outputs(json.loads(answer.content[:length]), answer.content[length:])
    predicted = [label.decode() for label in decoded["label"]]
    # The gateway remembered both labels of the binary answer, so it can judge feedback.
    feedback = {"requestId": answer.headers["x-request-id"], "labels": predicted}
    accepted = httpx.post(gateway_url + "/feedback", json=feedback)
    assert accepted.json() == {"accepted": 2, "duplicates": 0}, accepted.text
    assert metric(gateway_url, "bertops_gateway_feedback_total", outcome="correct") == 2


def test_one_request_id_the_gateways(
    serve: Callable[..., LiveServer], tiny_artifact: Path, tmp_path: Path
) -> None:
    """The gateway's x-request-id is the request's one id: the server logs it and feedback
    takes it. A client's OIP ``id`` is only its correlation id, echoed in the body."""
    log = tmp_path / "predictions.jsonl"
    settings = ServerSettings(prediction_log="hash", prediction_log_path=log)
    server = serve(create_app(ServedModel(str(tiny_artifact), threads=1), settings)).url
    wait_ready(server)
    table = Routes.model_validate(
        {"stable": {"name": "tiny-v1", "url": server, "model": "tiny-v1"}}
    )
    gateway = serve(create_gateway(table, feedback_access=FeedbackAccess.open())).url
    request = {
        "id": "client-correlation-7",
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["great"]}],
    }
    answer = httpx.post(gateway + "/v2/models/tiny-v1/infer", json=request)
    assert answer.status_code == 200, answer.text
    ours = answer.headers["x-request-id"]
    assert answer.json()["id"] == "client-correlation-7" and ours != "client-correlation-7"
    label = answer.json()["outputs"][0]["data"][0]
    theirs = httpx.post(
        gateway + "/feedback", json={"requestId": "client-correlation-7", "label": label}
    )
    assert theirs.status_code == 404
    assert (
        httpx.post(gateway + "/feedback", json={"requestId": ours, "label": label}).status_code
        == 200
    )
    deadline = time.monotonic() + 10
    while not (log.exists() and log.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    (line,) = log.read_text().splitlines()
    assert json.loads(line)["requestId"] == ours  # what a drift check and feedback join on
