"""Request parsing and response shapes of the model server's two REST dialects: the Open
Inference Protocol v2 (KServe's ``/v2/models/{name}/infer`` with a BYTES input of texts)
and the plain ``POST /predict {"texts": [...]}``. Pure functions, no I/O.

Called by :mod:`bertops.server.app`. Every bad input raises :class:`ProtocolError` with an
HTTP status and a message; the app turns it into the protocol's error body
``{"error": "..."}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bertops.server.model import Prediction

OUTPUT_NAMES = ("label", "score", "probabilities")


class ProtocolError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    max_texts: int = 64
    max_chars: int = 5000

    @property
    def max_body_bytes(self) -> int:
        # UTF-8 is at most 4 bytes a character, JSON escaping up to 6 (\uXXXX); plus room
        # for the envelope. Anything longer cannot be a valid request.
        return self.max_texts * (self.max_chars * 6 + 64) + 64 * 1024


def parse_json(body: bytes) -> Any:
    if not body:
        raise ProtocolError(400, "empty request body: expected a JSON object")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ProtocolError(400, f"invalid JSON: {error}") from error


def check_texts(texts: object, limits: Limits, what: str = "texts") -> list[str]:
    if not isinstance(texts, list):
        raise ProtocolError(400, f"{what} must be a list of strings, got {type(texts).__name__}")
    if not texts:
        raise ProtocolError(400, f"{what} is empty: send at least one text")
    if len(texts) > limits.max_texts:
        raise ProtocolError(
            413, f"{what} has {len(texts)} texts; at most {limits.max_texts} per request")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ProtocolError(
                400, f"{what}[{index}] must be a string, got {type(text).__name__}")
        if len(text) > limits.max_chars:
            raise ProtocolError(
                413, f"{what}[{index}] has {len(text)} characters; at most {limits.max_chars}")
    return texts


def parse_predict(document: Any, limits: Limits) -> list[str]:
    if not isinstance(document, dict):
        raise ProtocolError(400, 'expected a JSON object like {"texts": ["..."]}')
    if "texts" not in document:
        raise ProtocolError(400, 'missing field "texts"')
    return check_texts(document["texts"], limits)


@dataclass(frozen=True)
class InferRequest:
    texts: list[str]
    id: str | None
    input_name: str
    outputs: tuple[str, ...]


def _shape_size(shape: object) -> int:
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ProtocolError(400, "input shape must be a list of non-negative integers")
    size = 1
    for dimension in shape:
        size *= dimension
    return size


def parse_infer(document: Any, limits: Limits) -> InferRequest:
    """An OIP v2 inference request with one BYTES input whose elements are texts."""
    if not isinstance(document, dict):
        raise ProtocolError(400, "expected an inference request object")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(400, "id must be a string")
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError(400, "inputs must be a list with exactly one tensor of texts")
    tensor = inputs[0]
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise ProtocolError(400, "input tensor needs a name")
    if tensor.get("datatype") != "BYTES":
        raise ProtocolError(
            400, f"input {name!r} has datatype {tensor.get('datatype')!r}; expected BYTES")
    data = tensor.get("data")
    if isinstance(data, list) and data and all(isinstance(row, list) for row in data):
        data = [item for row in data for item in row]  # row-major nested form
    size = _shape_size(tensor.get("shape"))
    texts = check_texts(data, limits, what=f"input {name!r} data")
    if size != len(texts):
        raise ProtocolError(
            400, f"input {name!r} shape holds {size} elements but data has {len(texts)}")
    outputs: tuple[str, ...] = OUTPUT_NAMES
    requested = document.get("outputs")
    if requested is not None:
        if not isinstance(requested, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
        ):
            raise ProtocolError(400, "outputs must be a list of {\"name\": ...} objects")
        outputs = tuple(o["name"] for o in requested)
        unknown = [o for o in outputs if o not in OUTPUT_NAMES]
        if unknown:
            raise ProtocolError(
                400, f"unknown outputs {unknown}; this model has {list(OUTPUT_NAMES)}")
    return InferRequest(texts=texts, id=request_id, input_name=name, outputs=outputs)


def infer_response(model: str, version: str, request: InferRequest, request_id: str,
                   predictions: list[Prediction]) -> dict[str, Any]:
    n = len(predictions)
    tensors: dict[str, dict[str, Any]] = {
        "label": {"name": "label", "datatype": "BYTES", "shape": [n],
                  "data": [p.label for p in predictions]},
        "score": {"name": "score", "datatype": "FP32", "shape": [n],
                  "data": [p.score for p in predictions]},
        "probabilities": {
            "name": "probabilities", "datatype": "FP32",
            "shape": [n, len(predictions[0].probabilities) if predictions else 0],
            "data": [value for p in predictions for value in p.probabilities]},
    }
    return {
        "model_name": model,
        "model_version": version,
        "id": request.id if request.id is not None else request_id,
        "outputs": [tensors[name] for name in request.outputs],
    }


def predict_response(model: str, version: str, request_id: str, labels: list[str],
                     predictions: list[Prediction]) -> dict[str, Any]:
    return {
        "model": model,
        "modelVersion": version,
        "requestId": request_id,
        "predictions": [
            {"label": p.label, "score": p.score,
             "probabilities": dict(zip(labels, p.probabilities, strict=True))}
            for p in predictions
        ],
    }


def model_metadata(name: str, version: str, platform: str, labels: list[str]
                   ) -> dict[str, Any]:
    return {
        "name": name,
        "versions": [version],
        "platform": platform,
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "score", "datatype": "FP32", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(labels)]},
        ],
        "parameters": {"labels": labels},
    }
