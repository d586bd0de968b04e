"""The Open Inference Protocol's wire format: JSON tensors and the binary tensor data extension.

Binary layout (KServe's and Triton's binary tensor data extension): the JSON object comes first, its
byte length in the `Inference-Header-Content-Length` header, then each binary tensor's raw
little-endian, row-major bytes, in the order of the JSON's tensors that carry `binary_data_size`.
A BYTES element in binary form is a 4-byte little-endian length followed by the bytes.
"""

from __future__ import annotations

import base64
import binascii
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
from pydantic import ValidationError

from ..errors import ServiceError
from .schemas import InferenceRequest, InputTensor, OutputTensor, RequestInput

HEADER_LENGTH = "Inference-Header-Content-Length"
DATATYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
    | {"FP16", "FP32", "FP64", "BF16", "BYTES"}
)
_LENGTH = struct.Struct("<I")
_END = object()
# Content-Encoding -> zlib window bits: gzip framing, or the zlib framing HTTP calls "deflate".
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The request body as sent before its Content-Encoding, refusing more than `limit` bytes of it."""
    name = (encoding or "identity").strip().lower()
    if name == "identity":
        return body
    wbits = _WBITS.get(name)
    if wbits is None:
        raise ServiceError(415, f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none")
    inflater = zlib.decompressobj(wbits)
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ServiceError(400, f"the {name} request body cannot be decompressed ({exc})") from exc
    if len(plain) > limit:
        raise ServiceError(413, f"the decompressed request body exceeds the limit of {limit} bytes")
    if not inflater.eof:
        raise ServiceError(400, f"the {name} request body is truncated")
    return plain


def compress(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        packer = zlib.compressobj(1, zlib.DEFLATED, _WBITS["gzip"])
        return packer.compress(body) + packer.flush()
    return zlib.compress(body, 1)


def accepted_encoding(accept_encoding: str | None) -> str | None:
    """gzip or deflate when the client accepts it (the codings tritonclient asks for), else None."""
    offered = {}
    for part in (accept_encoding or "").lower().split(","):
        coding, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        offered[coding.strip()] = quality
    for coding in ("gzip", "deflate"):
        if offered.get(coding, 0.0) > 0.0:
            return coding
    return None


def parse_request(body: bytes, header_length: str | None) -> tuple[InferenceRequest, list[InputTensor]]:
    """The request's JSON, and its inputs paired with their JSON data or binary buffers."""
    json_part, binary = _split(body, header_length)
    try:
        document = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        raise ServiceError(400, f"the request is not valid JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise ServiceError(400, "the request must be a JSON object")
    try:
        request = InferenceRequest.model_validate(document)
    except ValidationError as exc:
        raise ServiceError(400, f"invalid inference request: {_summary(exc)}") from exc
    return request, _attach_data(request.inputs, binary)


def fp32_array(tensor: InputTensor) -> np.ndarray:
    """An FP32 input as a float32 array of its declared shape; NaN, infinities and JSON nulls are refused."""
    if tensor.raw is not None:
        expected = tensor.count * 4
        if len(tensor.raw) != expected:
            raise ServiceError(
                400,
                f"input {tensor.name!r} has {len(tensor.raw)} bytes of binary data; "
                f"FP32 shape {list(tensor.shape)} needs {expected}",
            )
        array = np.frombuffer(tensor.raw, dtype="<f4").reshape(tensor.shape)
    else:
        array = _json_fp32(tensor)
    if not np.isfinite(array).all():
        # A preprocessed image has finite values only; NaN would spread through every layer into the answer.
        raise ServiceError(400, f"input {tensor.name!r} holds NaN, an infinity or null; send finite numbers")
    return array


def _at_most(found: int, needed: int) -> str:
    """How many values were found, where counting stopped one past what the shape needs."""
    return f"more than {needed}" if found > needed else str(found)


def _json_fp32(tensor: InputTensor) -> np.ndarray:
    values = _flatten(tensor.data, tensor)
    try:
        array = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ServiceError(400, f"input {tensor.name!r}: data is not an array of numbers ({exc})") from exc
    if array.size != tensor.count:
        raise ServiceError(
            400,
            f"input {tensor.name!r} has {_at_most(array.size, tensor.count)} values; "
            f"shape {list(tensor.shape)} needs {tensor.count}",
        )
    return array.reshape(tensor.shape)


def bytes_elements(tensor: InputTensor) -> list[bytes]:
    """A BYTES input's elements: length-prefixed in binary form, base64 strings in JSON."""
    elements = _unpack_bytes(tensor) if tensor.raw is not None else _base64_elements(tensor)
    if len(elements) != tensor.count:
        raise ServiceError(
            400,
            f"input {tensor.name!r} has {_at_most(len(elements), tensor.count)} elements; "
            f"shape {list(tensor.shape)} needs {tensor.count}",
        )
    return elements


def encode_response(
    model_name: str, model_version: str, request_id: str | None, outputs: list[OutputTensor]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON's length when binary buffers follow it."""
    header: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        header["id"] = request_id
    entries: list[dict[str, Any]] = []
    buffers: list[bytes] = []
    for output in outputs:
        entry: dict[str, Any] = {"name": output.name, "datatype": output.datatype, "shape": list(output.shape)}
        if output.binary:
            raw = _raw_bytes(output)
            entry["parameters"] = {"binary_data_size": len(raw)}
            buffers.append(raw)
        elif isinstance(output.value, np.ndarray):
            entry["data"] = np.ascontiguousarray(output.value, dtype=np.float32).ravel()
        else:
            entry["data"] = [element.decode("utf-8", errors="replace") for element in output.value]
        entries.append(entry)
    header["outputs"] = entries
    document = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    if not buffers:
        return document, None
    return b"".join([document, *buffers]), len(document)


def classification(name: str, scores: np.ndarray, k: int, labels: tuple[str, ...], binary: bool) -> OutputTensor:
    """Triton's classification extension: the k best classes of each row as "value:index:label", best first."""
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    elements = [f"{scores[n, i]:f}:{i}:{labels[i]}".encode() for n in range(scores.shape[0]) for i in order[n]]
    return OutputTensor(name, "BYTES", elements, (scores.shape[0], k), binary)


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise ServiceError(400, f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
    if not 0 < length <= len(body):
        raise ServiceError(400, f"{HEADER_LENGTH} is {length}, but the body has {len(body)} bytes")
    return body[:length], body[length:]


def _summary(error: ValidationError) -> str:
    problems = []
    for item in error.errors()[:5]:
        where = ".".join(str(part) for part in item.get("loc", ()))
        problems.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
    return "; ".join(problems)


def _attach_data(inputs: list[RequestInput], binary: bytes) -> list[InputTensor]:
    tensors = []
    offset = 0
    for item in inputs:
        if any(key.startswith("shared_memory") for key in item.parameters):
            raise ServiceError(400, f"input {item.name!r}: shared memory is not supported by this server")
        if item.datatype not in DATATYPES:
            raise ServiceError(400, f"input {item.name!r}: unknown datatype {item.datatype!r}")
        if any(dim < 0 for dim in item.shape):
            raise ServiceError(400, f"input {item.name!r}: shape {item.shape} has a negative dimension")
        size = item.parameters.get("binary_data_size")
        raw = None
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise ServiceError(400, f"input {item.name!r}: binary_data_size must be a non-negative integer")
            if item.data is not None:
                raise ServiceError(400, f"input {item.name!r} has both JSON data and binary_data_size")
            if offset + size > len(binary):
                raise ServiceError(
                    400, f"input {item.name!r} declares {size} bytes of binary data, but only "
                    f"{len(binary) - offset} follow the JSON",
                )  # fmt: skip
            raw = binary[offset : offset + size]
            offset += size
        elif item.data is None:
            raise ServiceError(400, f"input {item.name!r} has neither data nor binary_data_size")
        parameters = {k: v for k, v in item.parameters.items() if k != "binary_data_size"}
        tensors.append(InputTensor(item.name, item.datatype, tuple(item.shape), parameters, raw, item.data))
    if offset != len(binary):
        raise ServiceError(
            400, f"{len(binary) - offset} bytes follow the JSON that no input's binary_data_size accounts for"
        )
    return tensors


def _unpack_bytes(tensor: InputTensor) -> list[bytes]:
    """The elements, up to one more than the shape needs: a body of millions of empty ones is not walked."""
    raw = tensor.raw
    assert raw is not None
    elements: list[bytes] = []
    offset = 0
    while offset < len(raw) and len(elements) <= tensor.count:
        if offset + 4 > len(raw):
            raise ServiceError(400, f"input {tensor.name!r}: binary BYTES data ends inside an element's length")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise ServiceError(400, f"input {tensor.name!r}: binary BYTES element {len(elements)} is truncated")
        elements.append(raw[offset : offset + length])
        offset += length
    return elements


def _base64_elements(tensor: InputTensor) -> list[bytes]:
    elements: list[bytes] = []
    for index, value in enumerate(_flatten(tensor.data, tensor)):
        if not isinstance(value, str):
            raise ServiceError(400, f"input {tensor.name!r}: element {index} is not a string")
        try:
            elements.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            raise ServiceError(
                400,
                f"input {tensor.name!r}: element {index} is not base64; in JSON, encoded images are sent as "
                "base64 strings (or send them as binary data)",
            ) from None
    return elements


def _flatten(data: Any, tensor: InputTensor) -> list[Any]:
    """The JSON data's values in row-major order, nested as deep as the shape at most, and one more than it needs.

    Without recursion: the depth of the data is the client's to choose.
    """
    flat: list[Any] = []
    limit = max(1, len(tensor.shape))
    stack: list[tuple[Iterator[Any], int]] = [(iter([data]), 0)]
    while stack and len(flat) <= tensor.count:
        items, depth = stack[-1]
        value = next(items, _END)
        if value is _END:
            stack.pop()
        elif not isinstance(value, list):
            flat.append(value)
        elif depth >= limit:
            raise ServiceError(400, f"input {tensor.name!r}: data is nested deeper than its shape {list(tensor.shape)}")
        else:
            stack.append((iter(value), depth + 1))
    return flat


def _raw_bytes(output: OutputTensor) -> bytes:
    if isinstance(output.value, np.ndarray):
        return np.ascontiguousarray(output.value, dtype="<f4").tobytes()
    return b"".join(_LENGTH.pack(len(element)) + element for element in output.value)
