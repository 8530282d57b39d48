"""The binary tensor data extension of the Open Inference Protocol v2 (as Triton and
KServe implement it): a body that starts with a JSON header of
``Inference-Header-Content-Length`` bytes, followed by the raw bytes of every tensor
whose ``parameters.binary_data_size`` says how many of them are its own, in tensor order.
BYTES elements are each a 4-byte little-endian length and then the bytes; FP32 tensors
are packed little-endian floats.

Pure functions on bytes and dicts, standard library only. Called by
:mod:`bertops.server.protocol` (binary inputs in, binary outputs out) and by
:mod:`bertops.server.gateway.inference` (reading predictions from a binary answer).
Every malformed body raises :class:`BinaryFormatError` with a message a client can act on.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Collection, Sequence
from typing import Any

HEADER = "inference-header-content-length"
"""The HTTP header that carries the JSON header's length, in requests and answers."""
EXTENSION = "binary_tensor_data"
"""The extension's name in server metadata, as Triton advertises it."""
CONTENT_TYPE = "application/octet-stream"

# Ten digits reach 9,999,999,999, far above any body a server accepts: the comparison with
# the body's real length then refuses it, and int() never sees a thousand-digit number.
_LENGTH = re.compile(r"[0-9]{1,10}")
_PREFIX = struct.Struct("<I")
_FLOAT_FORMATS = {"FP32": "f", "FP64": "d"}


class BinaryFormatError(ValueError):
    """A body, header or tensor that does not follow the extension (HTTP 400)."""


class TooManyElementsError(BinaryFormatError):
    """A BYTES tensor with more elements than the caller allows (HTTP 413)."""


def header_length(values: Sequence[str], body_size: int) -> int | None:
    """The JSON header's length from the ``Inference-Header-Content-Length`` header
    values (all of them, to catch a repeated header), or None when there is none."""
    if not values:
        return None
    if len(values) > 1:
        raise BinaryFormatError(f"{HEADER} given {len(values)} times; send it once")
    value = values[0].strip()
    if not _LENGTH.fullmatch(value):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise BinaryFormatError(f"{HEADER} must be a non-negative decimal integer, got {shown!r}")
    length = int(value)
    if length == 0:
        raise BinaryFormatError(f"{HEADER} is 0: the JSON header cannot be empty")
    if length > body_size:
        raise BinaryFormatError(f"{HEADER} is {length} but the body has only {body_size} bytes")
    return length


def split_body(body: bytes, length: int | None) -> tuple[bytes, bytes | None]:
    """(JSON header, binary part) of a body; the binary part is None without the header
    (then the whole body is JSON) and may be empty with it."""
    if length is None:
        return body, None
    return body[:length], body[length:]


def binary_size(tensor: dict[str, Any], what: str) -> int | None:
    """A tensor's ``parameters.binary_data_size``, None when it carries no binary data."""
    parameters = tensor.get("parameters")
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise BinaryFormatError(f"{what} parameters must be an object")
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BinaryFormatError(f"{what} binary_data_size must be a non-negative integer")
    return size


def slice_tensors(sizes: Sequence[int | None], data: bytes | None) -> list[bytes | None]:
    """Each tensor's raw bytes, in order, from the binary part of a body; None for a
    tensor whose data is in the JSON. The sizes must account for every byte."""
    declared = sum(size for size in sizes if size is not None)
    if data is None:
        if any(size is not None for size in sizes):
            raise BinaryFormatError(
                f"binary_data_size is set but the request has no binary data: send the "
                f"JSON header's length in the {HEADER} header"
            )
        return [None] * len(sizes)
    if declared != len(data):
        raise BinaryFormatError(
            f"the tensors' binary_data_size add up to {declared} bytes but the body holds "
            f"{len(data)} bytes after the JSON header"
        )
    parts: list[bytes | None] = []
    offset = 0
    for size in sizes:
        if size is None:
            parts.append(None)
            continue
        parts.append(data[offset : offset + size])
        offset += size
    return parts


def decode_bytes(raw: bytes, max_elements: int | None = None, what: str = "tensor") -> list[bytes]:
    """The elements of a BYTES tensor in binary form (each a 4-byte little-endian length,
    then that many bytes). Stops with TooManyElementsError past ``max_elements``."""
    elements: list[bytes] = []
    offset = 0
    view = memoryview(raw)
    while offset < len(raw):
        if max_elements is not None and len(elements) >= max_elements:
            raise TooManyElementsError(f"{what} has more than {max_elements} elements")
        if offset + _PREFIX.size > len(raw):
            raise BinaryFormatError(
                f"{what} element {len(elements)}: {len(raw) - offset} bytes left, "
                "too few for its 4-byte length"
            )
        (size,) = _PREFIX.unpack_from(raw, offset)
        offset += _PREFIX.size
        if size > len(raw) - offset:
            raise BinaryFormatError(
                f"{what} element {len(elements)} claims {size} bytes but only "
                f"{len(raw) - offset} remain"
            )
        elements.append(bytes(view[offset : offset + size]))
        offset += size
    return elements


def encode_bytes(elements: Sequence[bytes]) -> bytes:
    return b"".join(_PREFIX.pack(len(element)) + element for element in elements)


def decode_floats(raw: bytes, datatype: str = "FP32") -> list[float]:
    code = _FLOAT_FORMATS[datatype]
    width = struct.calcsize(code)
    if len(raw) % width:
        raise BinaryFormatError(f"{datatype} data of {len(raw)} bytes is no multiple of {width}")
    return list(struct.unpack(f"<{len(raw) // width}{code}", raw))


def encode_floats(values: Sequence[float], datatype: str = "FP32") -> bytes:
    return struct.pack(f"<{len(values)}{_FLOAT_FORMATS[datatype]}", *values)


def encode_tensor(datatype: str, data: Sequence[Any]) -> bytes:
    """The binary form of a flat JSON tensor: BYTES of strings (UTF-8) or of bytes, FP32, FP64."""
    if datatype == "BYTES":
        return encode_bytes([d.encode() if isinstance(d, str) else bytes(d) for d in data])
    if datatype in _FLOAT_FORMATS:
        return encode_floats(data, datatype)
    raise BinaryFormatError(f"datatype {datatype} has no binary encoding here")


def encode_outputs(document: dict[str, Any], binary: Collection[str]) -> tuple[bytes, int | None]:
    """An inference answer as a body: (JSON, None) when no output is binary, otherwise
    (JSON header + the named outputs' bytes in output order, the header's length). Each
    binary output loses its ``data`` and gains ``parameters.binary_data_size``."""
    outputs = []
    blobs = []
    for output in document.get("outputs", []):
        if output["name"] not in binary:
            outputs.append(output)
            continue
        blob = encode_tensor(output["datatype"], output["data"])
        parameters = {**output.get("parameters", {}), "binary_data_size": len(blob)}
        described = {key: value for key, value in output.items() if key != "data"}
        outputs.append(described | {"parameters": parameters})
        blobs.append(blob)
    # The same rendering as Starlette's JSONResponse, so both forms read alike.
    header = json.dumps(
        {**document, "outputs": outputs},
        ensure_ascii=False,
        allow_nan=False,
        separators=(",", ":"),
    ).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)


def decode_outputs(document: dict[str, Any], data: bytes) -> dict[str, list[Any]]:
    """The data of an answer's binary outputs (BYTES as bytes, FP32/FP64 as floats), by
    name; outputs of other datatypes are skipped, their bytes still accounted for."""
    outputs = document.get("outputs")
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise BinaryFormatError("outputs must be a list of objects")
    sizes = [binary_size(o, f"output {index}") for index, o in enumerate(outputs)]
    decoded: dict[str, list[Any]] = {}
    for output, raw in zip(outputs, slice_tensors(sizes, data), strict=True):
        name, datatype = output.get("name"), output.get("datatype")
        if raw is None or not isinstance(name, str):
            continue
        if datatype == "BYTES":
            decoded[name] = decode_bytes(raw, what=f"output {name!r}")
        elif datatype in _FLOAT_FORMATS:
            decoded[name] = decode_floats(raw, datatype)
    return decoded
