"""Request parsing and response shapes of the model server's two REST dialects: the Open
Inference Protocol v2 (KServe's ``/v2/models/{name}/infer`` with a BYTES input of texts,
as JSON or in the binary tensor data extension, see :mod:`bertops.server.binary`) and the
plain ``POST /predict {"texts": [...]}``. Pure functions, no I/O.

Called by :mod:`bertops.server.app`. Every bad input raises :class:`ProtocolError` with an
HTTP status and a message; the app turns it into the protocol's error body
``{"error": "..."}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bertops.api.limits import DEFAULT_MAX_BODY_BYTES, request_body_limit
from bertops.server import binary
from bertops.server.model import Prediction

OUTPUT_NAMES = ("label", "score", "probabilities")


"""Absolute ceiling of a request body, whatever max texts x max chars would allow."""

MAX_REQUEST_ID_CHARS = 256
# Visible ASCII, inner spaces allowed: an id is echoed in a response header (Latin-1, no
# CR/LF or other control characters, no leading/trailing blanks, which HTTP strips) and
# written to the prediction log (valid UTF-8, so no lone surrogates).
REQUEST_ID = re.compile(r"[!-~](?:[ -~]*[!-~])?")
# A lone surrogate decodes from JSON ("\ud800") but is no text: the tokenizer cannot
# encode it and fails the whole batch it rides in.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class ProtocolError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True)
class Limits:
    max_texts: int = 64
    max_chars: int = 5000
    max_body_ceiling: int = DEFAULT_MAX_BODY_BYTES

    @property
    def max_body_bytes(self) -> int:
        """Anything longer cannot be a valid request."""
        return request_body_limit(self.max_texts, self.max_chars, self.max_body_ceiling)


def parse_json(body: bytes) -> Any:
    if not body:
        raise ProtocolError(400, "empty request body: expected a JSON object")
    try:
        return json.loads(body)
    except RecursionError as error:
        raise ProtocolError(400, "invalid JSON: nested too deeply") from error
    except ValueError as error:
        # JSONDecodeError, UnicodeDecodeError and the int-digits limit are all ValueErrors.
        raise ProtocolError(400, f"invalid JSON: {_clip(str(error))}") from error


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def check_request_id(value: object, what: str = "id") -> str | None:
    """A client-chosen request id, or None when absent or empty (the server makes one)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ProtocolError(400, f"{what} must be a string, got {type(value).__name__}")
    if len(value) > MAX_REQUEST_ID_CHARS or not REQUEST_ID.fullmatch(value):
        raise ProtocolError(
            400,
            f"{what} must be 1-{MAX_REQUEST_ID_CHARS} printable ASCII characters "
            "without control characters or leading/trailing spaces",
        )
    return value


def check_texts(texts: object, limits: Limits, what: str = "texts") -> list[str]:
    if not isinstance(texts, list):
        raise ProtocolError(400, f"{what} must be a list of strings, got {type(texts).__name__}")
    if not texts:
        raise ProtocolError(400, f"{what} is empty: send at least one text")
    if len(texts) > limits.max_texts:
        raise ProtocolError(
            413, f"{what} has {len(texts)} texts; at most {limits.max_texts} per request"
        )
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ProtocolError(400, f"{what}[{index}] must be a string, got {type(text).__name__}")
        if len(text) > limits.max_chars:
            raise ProtocolError(
                413, f"{what}[{index}] has {len(text)} characters; at most {limits.max_chars}"
            )
        if _SURROGATE.search(text):
            raise ProtocolError(
                400,
                f"{what}[{index}] holds a lone surrogate (\\ud800-\\udfff): not valid Unicode text",
            )
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
    binary_outputs: frozenset[str] = frozenset()
    """The outputs to answer in the binary tensor data extension's form."""


def _shape_size(shape: object, limit: int) -> int:
    """The element count of a shape, capped just above ``limit`` (a product of huge
    dimensions must not cost time: anything above the limit is refused anyway)."""
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ProtocolError(400, "input shape must be a list of non-negative integers")
    if 0 in shape:
        return 0
    size = 1
    for dimension in shape:
        size = min(size * dimension, limit + 1)
    return size


def parse_infer_body(body: bytes, header: Sequence[str], limits: Limits) -> InferRequest:
    """An OIP v2 inference body: plain JSON, or with ``header`` (the values of
    ``Inference-Header-Content-Length``) a JSON header followed by binary tensor data."""
    try:
        length = binary.header_length(header, len(body))
    except binary.BinaryFormatError as error:
        raise ProtocolError(400, str(error)) from error
    document, data = binary.split_body(body, length)
    return parse_infer(parse_json(document), limits, data)


def parse_infer(document: Any, limits: Limits, data: bytes | None = None) -> InferRequest:
    """An OIP v2 inference request with one BYTES input whose elements are texts, given
    as JSON ``data`` or in ``data``, the binary part of the body (None without one)."""
    if not isinstance(document, dict):
        raise ProtocolError(400, "expected an inference request object")
    request_id = check_request_id(document.get("id"))
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError(400, "inputs must be a list with exactly one tensor of texts")
    tensor = inputs[0]
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise ProtocolError(400, "input tensor needs a name")
    if len(name) > MAX_REQUEST_ID_CHARS:
        raise ProtocolError(400, f"input name longer than {MAX_REQUEST_ID_CHARS} characters")
    if tensor.get("datatype") != "BYTES":
        datatype = _clip(repr(tensor.get("datatype")))
        raise ProtocolError(400, f"input {name!r} has datatype {datatype}; expected BYTES")
    size = _shape_size(tensor.get("shape"), limits.max_texts)
    texts = check_texts(_input_data(tensor, name, limits, data), limits, f"input {name!r} data")
    if size != len(texts):
        held = f"more than {limits.max_texts}" if size > limits.max_texts else str(size)
        raise ProtocolError(
            400, f"input {name!r} shape holds {held} elements but data has {len(texts)}"
        )
    outputs, binary_outputs = _requested_outputs(document)
    return InferRequest(texts, request_id, name, outputs, binary_outputs)


def _input_data(tensor: dict[str, Any], name: str, limits: Limits, data: bytes | None) -> object:
    """The input's elements: its JSON ``data`` (nested lists flattened), or the texts
    decoded from its share of the binary part (UTF-8, strictly)."""
    what = f"input {name!r}"
    try:
        raw = binary.slice_tensors([binary.binary_size(tensor, what)], data)[0]
        if raw is None:
            rows = tensor.get("data")
            if isinstance(rows, list) and rows and all(isinstance(row, list) for row in rows):
                return [item for row in rows for item in row]  # row-major nested form
            return rows
        if "data" in tensor:
            raise ProtocolError(400, f"{what} has both JSON data and binary_data_size; send one")
        elements = binary.decode_bytes(raw, limits.max_texts, what)
    except binary.TooManyElementsError as error:
        raise ProtocolError(413, f"{error}; at most {limits.max_texts} per request") from error
    except binary.BinaryFormatError as error:
        raise ProtocolError(400, str(error)) from error
    texts = []
    for index, element in enumerate(elements):
        try:
            texts.append(element.decode("utf-8"))
        except UnicodeDecodeError as error:  # also UTF-8-encoded lone surrogates
            raise ProtocolError(
                400, f"{what} element {index} is not valid UTF-8 text: {error.reason}"
            ) from error
    return texts


def _flag(parameters: object, key: str, what: str) -> bool | None:
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise ProtocolError(400, f"{what} parameters must be an object")
    value = parameters.get(key)
    if value is not None and not isinstance(value, bool):
        raise ProtocolError(400, f"{what} parameter {key} must be true or false")
    return value


def _requested_outputs(document: dict[str, Any]) -> tuple[tuple[str, ...], frozenset[str]]:
    """The outputs to answer, and those of them to answer in binary form: each output's
    ``parameters.binary_data``, else the request's ``parameters.binary_data_output``."""
    default = bool(_flag(document.get("parameters"), "binary_data_output", "request"))
    requested = document.get("outputs")
    if requested is None:
        return OUTPUT_NAMES, frozenset(OUTPUT_NAMES if default else ())
    if not isinstance(requested, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
    ):
        raise ProtocolError(400, 'outputs must be a list of {"name": ...} objects')
    outputs = tuple(o["name"] for o in requested)
    repeated = sorted({o for o in outputs if outputs.count(o) > 1})
    if repeated:
        # Each repeat would add the whole tensor again: a small request, a huge answer.
        raise ProtocolError(400, f"outputs named more than once: {_clip(repr(repeated))}")
    unknown = [o for o in outputs if o not in OUTPUT_NAMES]
    if unknown:
        raise ProtocolError(
            400, f"unknown outputs {_clip(repr(unknown))}; this model has {list(OUTPUT_NAMES)}"
        )
    binary_outputs = set()
    for output in requested:
        flag = _flag(output.get("parameters"), "binary_data", f"output {output['name']!r}")
        if default if flag is None else flag:
            binary_outputs.add(output["name"])
    return outputs, frozenset(binary_outputs)


def infer_response(
    model: str, version: str, request: InferRequest, request_id: str, predictions: list[Prediction]
) -> dict[str, Any]:
    n = len(predictions)
    tensors: dict[str, dict[str, Any]] = {
        "label": {
            "name": "label",
            "datatype": "BYTES",
            "shape": [n],
            "data": [p.label for p in predictions],
        },
        "score": {
            "name": "score",
            "datatype": "FP32",
            "shape": [n],
            "data": [p.score for p in predictions],
        },
        "probabilities": {
            "name": "probabilities",
            "datatype": "FP32",
            "shape": [n, len(predictions[0].probabilities) if predictions else 0],
            "data": [value for p in predictions for value in p.probabilities],
        },
    }
    return {
        "model_name": model,
        "model_version": version,
        "id": request.id if request.id is not None else request_id,
        "outputs": [tensors[name] for name in request.outputs],
    }


def predict_response(
    model: str, version: str, request_id: str, labels: list[str], predictions: list[Prediction]
) -> dict[str, Any]:
    return {
        "model": model,
        "modelVersion": version,
        "requestId": request_id,
        "predictions": [
            {
                "label": p.label,
                "score": p.score,
                "probabilities": dict(zip(labels, p.probabilities, strict=True)),
            }
            for p in predictions
        ],
    }


def model_metadata(name: str, version: str, platform: str, labels: list[str]) -> dict[str, Any]:
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
