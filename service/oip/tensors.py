"""Tensors of the Open Inference Protocol, whichever transport carried them: their datatypes, FP32 and BYTES
inputs as arrays and elements, the classification extension's output, and an output's raw bytes.

Raw data is little-endian and row-major, as both the HTTP binary extension and gRPC's raw contents are; a
BYTES element in raw form is a 4-byte little-endian length followed by its bytes.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ..errors import ServiceError
from .schemas import InputTensor, OutputTensor

DATATYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
    | {"FP16", "FP32", "FP64", "BF16", "BYTES"}
)
_LENGTH = struct.Struct("<I")
_END = object()


def check_input(name: str, datatype: str, shape: list[int], parameters: dict[str, Any]) -> None:
    """Refuse an input this server cannot take whatever the model: shared memory, an unknown datatype, a
    negative dimension."""
    if any(key.startswith("shared_memory") for key in parameters):
        raise ServiceError(400, f"input {name!r}: shared memory is not supported by this server")
    if datatype not in DATATYPES:
        raise ServiceError(400, f"input {name!r}: unknown datatype {datatype!r}")
    if any(dim < 0 for dim in shape):
        raise ServiceError(400, f"input {name!r}: shape {shape} has a negative dimension")


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


def classification(name: str, scores: np.ndarray, k: int, labels: tuple[str, ...], binary: bool) -> OutputTensor:
    """Triton's classification extension: the k best classes of each row as "value:index:label", best first."""
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    elements = [f"{scores[n, i]:f}:{i}:{labels[i]}".encode() for n in range(scores.shape[0]) for i in order[n]]
    return OutputTensor(name, "BYTES", elements, (scores.shape[0], k), binary)


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


def raw_bytes(output: OutputTensor) -> bytes:
    if isinstance(output.value, np.ndarray):
        return np.ascontiguousarray(output.value, dtype="<f4").tobytes()
    return packed_bytes(output.value)


def packed_bytes(elements: Iterable[bytes]) -> bytes:
    """BYTES elements in the binary layout: each one after its length as a little-endian uint32."""
    return b"".join(_LENGTH.pack(len(element)) + element for element in elements)
