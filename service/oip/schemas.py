"""The Open Inference Protocol's documents (pydantic: HTTP validates its JSON with them, gRPC builds them from its
messages) and the tensors parsed from them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 marks a dimension of variable size")


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    # Any, so that pydantic passes a large tensor's list through without walking it.
    data: Any = None


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


@dataclass(frozen=True)
class InputTensor:
    """One request input with its data: `raw` for binary data, else the JSON `data`."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    parameters: dict[str, Any]
    raw: bytes | None
    data: Any

    @property
    def count(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class OutputTensor:
    name: str
    datatype: str  # FP32 or BYTES
    value: np.ndarray | list[bytes]  # float32 of the full shape, or the BYTES elements in row-major order
    shape: tuple[int, ...]
    binary: bool
