"""What the gateway reads of inference traffic: which requests are inferences, how a path
is rewritten for a backend's OIP model name, and the predicted labels, scores and label
set in a ``/predict`` or OIP ``infer`` answer (JSON, or with binary outputs in the binary
tensor data extension, see :mod:`bertops.server.binary`).

Pure functions, used by :mod:`bertops.server.gateway.app` (counting predictions per
variant, remembering answers and, for a feedback log, their texts) and
:mod:`bertops.server.gateway.shadow`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from bertops.api.routes import Backend
from bertops.server import binary
from bertops.server.protocol import (
    Limits,
    ProtocolError,
    parse_infer_body,
    parse_json,
    parse_predict,
)

_MODEL_PATH = re.compile(r"^/v2/models/[^/]+(?=/|$)")
_INFER_PATH = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$")


def is_inference(method: str, path: str) -> bool:
    return method == "POST" and (path == "/predict" or bool(_INFER_PATH.match(path)))


def backend_path(backend: Backend, path: str) -> str:
    if backend.model is not None:
        return _MODEL_PATH.sub(f"/v2/models/{backend.model}", path)
    return path


# The model server already enforced its own limits on a request it answered; the
# gateway reads the texts back without limits of its own (its body ceiling holds).
_UNLIMITED = Limits(max_texts=1 << 30, max_chars=1 << 40, max_body_ceiling=1 << 50)


def request_texts(path: str, body: bytes, binary_header: str | None) -> tuple[str, ...] | None:
    """The texts of a ``/predict`` or OIP infer request (JSON, or in the binary tensor
    data extension with its ``Inference-Header-Content-Length``); None when unreadable."""
    try:
        if path == "/predict":
            texts = parse_predict(parse_json(body), _UNLIMITED)
        else:
            header = [binary_header] if binary_header is not None else []
            texts = parse_infer_body(body, header, _UNLIMITED).texts
    except ProtocolError:
        return None
    return tuple(texts)


def _document(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _binary_outputs(body: bytes, header: str) -> dict[str, Any] | None:
    """An OIP answer in the binary extension's form, its binary outputs' data filled in
    (BYTES as text); None when it is malformed."""
    try:
        length = binary.header_length([header], len(body))
        head, data = binary.split_body(body, length)
        document = json.loads(head)
        if not isinstance(document, dict):
            return None
        decoded = binary.decode_outputs(document, data or b"")
    except ValueError:  # BinaryFormatError, invalid JSON or UTF-8
        return None
    for name, values in decoded.items():
        decoded[name] = [v.decode(errors="replace") if isinstance(v, bytes) else v for v in values]
    outputs = [
        {**output, "data": decoded[output["name"]]} if output.get("name") in decoded else output
        for output in document["outputs"]
    ]
    return {**document, "outputs": outputs}


def predicted(body: bytes, binary_header: str | None = None) -> list[tuple[str, float | None]]:
    """(label, score) pairs from a /predict or OIP infer answer; [] if it has none.
    ``binary_header`` is the answer's ``Inference-Header-Content-Length``, if any."""
    if binary_header is not None:
        document = _binary_outputs(body, binary_header)
    else:
        document = _document(body)
    if document is None:
        return []
    if isinstance(document.get("predictions"), list):
        return [
            (str(p.get("label")), p.get("score"))
            for p in document["predictions"]
            if isinstance(p, dict) and "label" in p
        ]
    outputs = {
        o.get("name"): o.get("data") for o in document.get("outputs") or [] if isinstance(o, dict)
    }
    labels = outputs.get("label") or []
    scores = outputs.get("score") or [None] * len(labels)
    return [(str(label), score) for label, score in zip(labels, scores, strict=False)]


def answer_labels(body: bytes) -> frozenset[str] | None:
    """The model's whole label set, when a /predict answer carries class probabilities
    (``{"probabilities": {label: p, ...}}``); None otherwise."""
    document = _document(body)
    predictions = document.get("predictions") if document else None
    if not isinstance(predictions, list) or not predictions:
        return None
    first = predictions[0]
    probabilities = first.get("probabilities") if isinstance(first, dict) else None
    if not isinstance(probabilities, dict) or not probabilities:
        return None
    return frozenset(str(label) for label in probabilities)


def metadata_labels(body: bytes) -> frozenset[str] | None:
    """The label set in an OIP model metadata answer (``parameters.labels``)."""
    document = _document(body)
    parameters = document.get("parameters") if document else None
    labels = parameters.get("labels") if isinstance(parameters, dict) else None
    if not isinstance(labels, list) or not labels:
        return None
    return frozenset(str(label) for label in labels)
