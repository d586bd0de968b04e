"""The Open Inference Protocol's wire format: JSON tensors and the binary tensor data extension.

Binary layout (KServe's and Triton's binary tensor data extension): the JSON object comes first, its
byte length in the `Inference-Header-Content-Length` header, then each binary tensor's raw
little-endian, row-major bytes, in the order of the JSON's tensors that carry `binary_data_size`.
A BYTES element in binary form is a 4-byte little-endian length followed by the bytes.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import orjson
from pydantic import ValidationError

from ..errors import ServiceError
from ..oip import tensors
from ..oip.schemas import InferenceRequest, InputTensor, OutputTensor, RequestInput

HEADER_LENGTH = "Inference-Header-Content-Length"
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
            raw = tensors.raw_bytes(output)
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
    attached = []
    offset = 0
    for item in inputs:
        tensors.check_input(item.name, item.datatype, item.shape, item.parameters)
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
        attached.append(InputTensor(item.name, item.datatype, tuple(item.shape), parameters, raw, item.data))
    if offset != len(binary):
        raise ServiceError(
            400, f"{len(binary) - offset} bytes follow the JSON that no input's binary_data_size accounts for"
        )
    return attached
