"""Read a TFLite flatbuffer into plain dataclasses: tensors with quantization, ops with options.

Only what the converter needs; the flatbuffer accessors of the `tflite` package stay in here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tflite
from tflite.utils import opcode2name

_DTYPES = {
    tflite.TensorType.FLOAT32: np.float32,
    tflite.TensorType.INT32: np.int32,
    tflite.TensorType.UINT8: np.uint8,
    tflite.TensorType.INT64: np.int64,
    tflite.TensorType.INT8: np.int8,
    tflite.TensorType.FLOAT16: np.float16,
}
_INDEX_VECTORS = {
    tflite.SparseIndexVector.Int32Vector: tflite.Int32Vector,
    tflite.SparseIndexVector.Uint16Vector: tflite.Uint16Vector,
    tflite.SparseIndexVector.Uint8Vector: tflite.Uint8Vector,
}
# MediaPipe's transposed convolution with bias: its options are TfLiteTransposeConvParams' raw bytes.
CUSTOM_TRANSPOSE_CONV = "Convolution2DTransposeBias"
_TFLITE_PADDING_ENUM = {1: "SAME", 2: "VALID"}

_ACTIVATIONS = {
    tflite.ActivationFunctionType.NONE: None,
    tflite.ActivationFunctionType.RELU: "RELU",
    tflite.ActivationFunctionType.RELU6: "RELU6",
}

_PADDING = {tflite.Padding.SAME: "SAME", tflite.Padding.VALID: "VALID"}


@dataclass(frozen=True)
class Quant:
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: type
    quant: Quant | None
    data: np.ndarray | None


@dataclass
class Op:
    kind: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    tensors: list[Tensor]
    ops: list[Op]
    inputs: list[int]
    outputs: list[int]

    def by_name(self, name: str) -> Tensor:
        return next(t for t in self.tensors if t.name == name)


def _quant(raw: Any) -> Quant | None:
    if raw is None or raw.ScaleLength() == 0:
        return None
    return Quant(
        scale=raw.ScaleAsNumpy().astype(np.float32),
        zero_point=raw.ZeroPointAsNumpy().astype(np.int64),
        axis=raw.QuantizedDimension(),
    )


def _activation(opt: Any) -> dict[str, Any]:
    return {"activation": _ACTIVATIONS[opt.FusedActivationFunction()]}


def _conv(opt: Any) -> dict[str, Any]:
    return {
        "padding": _PADDING[opt.Padding()],
        "strides": (opt.StrideH(), opt.StrideW()),
        "dilations": (opt.DilationHFactor(), opt.DilationWFactor()),
        **_activation(opt),
    }


def _pool(opt: Any) -> dict[str, Any]:
    return {
        "padding": _PADDING[opt.Padding()],
        "strides": (opt.StrideH(), opt.StrideW()),
        "kernel": (opt.FilterHeight(), opt.FilterWidth()),
        **_activation(opt),
    }


# Each op's builtin options table, and what is read from it.
_OPTION_READERS: dict[str, tuple[Any, Callable[[Any], dict[str, Any]]]] = {
    "CONV_2D": (tflite.Conv2DOptions, _conv),
    "DEPTHWISE_CONV_2D": (tflite.DepthwiseConv2DOptions, _conv),
    "AVERAGE_POOL_2D": (tflite.Pool2DOptions, _pool),
    "MAX_POOL_2D": (tflite.Pool2DOptions, _pool),
    "MUL": (tflite.MulOptions, _activation),
    "ADD": (tflite.AddOptions, _activation),
    "FULLY_CONNECTED": (tflite.FullyConnectedOptions, _activation),
    "DEPTH_TO_SPACE": (tflite.DepthToSpaceOptions, lambda opt: {"block_size": opt.BlockSize()}),
    "CONCATENATION": (tflite.ConcatenationOptions, lambda opt: {"axis": opt.Axis(), **_activation(opt)}),
    "RESIZE_BILINEAR": (
        tflite.ResizeBilinearOptions,
        lambda opt: {"align_corners": opt.AlignCorners(), "half_pixel_centers": opt.HalfPixelCenters()},
    ),
    "MEAN": (tflite.ReducerOptions, lambda opt: {"keep_dims": opt.KeepDims()}),
}


def _options(kind: str, op: Any) -> dict[str, Any]:
    table = op.BuiltinOptions()
    reader = _OPTION_READERS.get(kind)
    if table is None or reader is None:
        return {}
    options_class, read = reader
    opt = options_class()
    opt.Init(table.Bytes, table.Pos)
    return read(opt)


def _custom_options(kind: str, op: Any) -> dict[str, Any]:
    if kind != CUSTOM_TRANSPOSE_CONV:
        return {}
    padding, stride_w, stride_h = (int(v) for v in np.frombuffer(op.CustomOptionsAsNumpy().tobytes(), np.int32)[:3])
    return {"padding": _TFLITE_PADDING_ENUM[padding], "strides": (stride_h, stride_w)}


def _index_vector(table: Any, kind: int) -> np.ndarray:
    vector = _INDEX_VECTORS[kind]()
    vector.Init(table.Bytes, table.Pos)
    return vector.ValuesAsNumpy().astype(np.int64)


def densify(values: np.ndarray, shape: tuple[int, ...], sparsity: Any) -> np.ndarray:
    """A sparse constant (TFLite's DENSIFY input) as a dense array.

    Only the layout the MediaPipe detectors use: dimensions in order, no blocks, every dimension dense
    but the last, which is CSR (a segment per row of the dense ones, the column of each stored value).
    """
    order = [int(d) for d in sparsity.TraversalOrderAsNumpy()]
    dims = [sparsity.DimMetadata(i) for i in range(sparsity.DimMetadataLength())]
    layout = [d.Format() for d in dims]
    if order != list(range(len(shape))) or sparsity.BlockMapLength() or layout != [0] * (len(shape) - 1) + [1]:
        raise ValueError(f"sparse layout {layout} (order {order}) is not supported; only rows of CSR columns")
    last = dims[-1]
    segments = _index_vector(last.ArraySegments(), last.ArraySegmentsType())
    columns = _index_vector(last.ArrayIndices(), last.ArrayIndicesType())
    rows = int(np.prod(shape[:-1]))
    if segments.size != rows + 1 or columns.size != values.size:
        raise ValueError(f"sparse tensor of {values.size} values does not fit {rows} rows of shape {shape}")
    dense = np.zeros((rows, shape[-1]), dtype=values.dtype)
    row_of_value = np.repeat(np.arange(rows), np.diff(segments))
    dense[row_of_value, columns] = values
    return dense.reshape(shape)


def read(path: Path) -> Graph:
    model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
    if model.SubgraphsLength() != 1:
        raise ValueError(f"{path.name}: expected one subgraph, found {model.SubgraphsLength()}")
    graph = model.Subgraphs(0)
    tensors = []
    for i in range(graph.TensorsLength()):
        raw = graph.Tensors(i)
        dtype = _DTYPES[raw.Type()]
        buffer = model.Buffers(raw.Buffer())
        shape = tuple(int(d) for d in raw.ShapeAsNumpy()) if raw.ShapeLength() else ()
        data = None
        if buffer is not None and buffer.DataLength():
            data = np.frombuffer(buffer.DataAsNumpy().tobytes(), dtype=dtype)
            sparsity = raw.Sparsity()
            data = data.reshape(shape) if sparsity is None else densify(data, shape, sparsity)
        tensors.append(Tensor(i, raw.Name().decode(), shape, dtype, _quant(raw.Quantization()), data))
    ops = []
    for i in range(graph.OperatorsLength()):
        raw = graph.Operators(i)
        code = model.OperatorCodes(raw.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        custom = builtin == tflite.BuiltinOperator.CUSTOM
        kind = code.CustomCode().decode() if custom else opcode2name(builtin)
        ops.append(
            Op(
                kind=kind,
                inputs=[int(x) for x in raw.InputsAsNumpy()],
                outputs=[int(x) for x in raw.OutputsAsNumpy()],
                options=_custom_options(kind, raw) if custom else _options(kind, raw),
            )
        )
    return Graph(
        tensors=tensors,
        ops=ops,
        inputs=[int(x) for x in graph.InputsAsNumpy()],
        outputs=[int(x) for x in graph.OutputsAsNumpy()],
    )
