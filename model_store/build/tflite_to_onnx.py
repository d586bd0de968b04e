"""Convert TFLite graphs (NHWC) into ONNX graphs (NCHW, float edges): quantized ones as QDQ, float ones as float.

Weights stay integer behind DequantizeLinear; every activation the TFLite graph quantizes
gets a QuantizeLinear/DequantizeLinear pair with the same scale and zero point, so ONNX
Runtime fuses the pattern back into integer kernels and reproduces TFLite's arithmetic up
to rounding. Float graphs with fp16 weights (MediaPipe's) keep them fp16 behind a Cast, which
ONNX Runtime folds at load, as TFLite dequantizes them once at load. Spatial sizes are kept
symbolic: pooling over the whole map becomes GlobalAveragePool and resize targets are read
from the shapes of live tensors.

Covers the ops these MobileNet, iNaturalist, DeepLab and MediaPipe graphs use (the float graphs'
own ops are in tflite_float_ops.py); anything else fails loudly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from . import tflite_float_ops
from .onnx_builder import OnnxBuilder
from .tflite_reader import Graph, Op, Tensor

OPSET = 17
_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1, -1: 1}
# Ops that end the useful part of a graph: the service applies softmax / argmax itself.
_TERMINAL = ("SOFTMAX", "ARG_MAX")


def _conv_padding(options: dict, kernel: tuple[int, ...]) -> dict:
    """TF SAME padding that stays valid for any input size.

    With stride 1 the padding does not depend on the input size, so it is written out
    (ONNX Runtime's integer kernels refuse auto_pad together with dilation); with larger
    strides SAME_UPPER reproduces TF's extra pixel at the bottom/right.
    """
    if options["padding"] == "VALID":
        return {"auto_pad": "VALID"}
    if tuple(options["strides"]) != (1, 1):
        return {"auto_pad": "SAME_UPPER"}
    totals = [d * (k - 1) for d, k in zip(options["dilations"], kernel)]
    return {"pads": [t // 2 for t in totals] + [t - t // 2 for t in totals]}


@dataclass
class Imported:
    """What one TFLite graph became: ONNX value names by TFLite tensor index, and landmarks."""

    values: dict[int, str]
    shapes: dict[int, tuple[int, ...]]
    produced: list[int]
    head: str | None = None
    pooled: str | None = None
    pooled_dim: int | None = None


class _Importer:
    def __init__(self, builder: OnnxBuilder, graph: Graph, prefix: str, image: str) -> None:
        self.b = builder
        self.g = graph
        self.prefix = prefix
        self.image = image
        self.out = Imported(values={}, shapes={}, produced=[])
        # Constants that ops (DEQUANTIZE, DENSIFY) made from stored ones, by TFLite tensor index.
        self.constants: dict[int, np.ndarray] = {}
        # Zero padding of H and W that the one convolution reading it takes as its own pads:
        # padded tensor -> (unpadded tensor, ONNX pads [top, left, bottom, right]).
        self.folded_pads: dict[int, tuple[int, list[int]]] = {}
        self.readers: dict[int, list[Op]] = {}
        for op in graph.ops:
            for index in op.inputs:
                self.readers.setdefault(index, []).append(op)

    def tensor(self, index: int) -> Tensor:
        return self.g.tensors[index]

    def constant(self, index: int) -> np.ndarray:
        """A constant's values: stored in the file, or made at load time from stored ones."""
        data = self.tensor(index).data
        if data is None:
            data = self.constants.get(index)
        if data is None:
            raise ValueError(f"tensor {self.tensor(index).name} is not a constant")
        return data

    def weight(self, index: int, data: np.ndarray, axis: int) -> str:
        """Tensor `index`'s values, laid out as `data`, as an ONNX weight (quantized or float)."""
        quant = self.tensor(index).quant
        if quant is not None:
            return self.b.dequantized_const(data, quant, axis, self.hint(index))
        return self.b.float_const(data, self.hint(index))

    def hint(self, index: int) -> str:
        return f"{self.prefix}t{index}"

    def emit_output(self, value: str, index: int, activation: str | None) -> None:
        if activation == "RELU":
            value = self.b.node("Relu", [value], f"{self.hint(index)}_relu")
        elif activation == "RELU6":
            lo = self.b.const(np.float32(0.0), "zero_f")
            hi = self.b.const(np.float32(6.0), "six_f")
            value = self.b.node("Clip", [value, lo, hi], f"{self.hint(index)}_relu6")
        elif activation is not None:
            raise ValueError(f"unsupported fused activation {activation}")
        tensor = self.tensor(index)
        if tensor.quant is not None:
            value = self.b.qdq(value, tensor.quant, tensor.dtype, self.hint(index))
        elif tensor.dtype != np.float32:
            raise ValueError(f"tensor {tensor.name} is {np.dtype(tensor.dtype).name} but not quantized")
        self.out.values[index] = value
        self.out.shapes[index] = tensor.shape
        self.out.produced.append(index)

    def bias(self, index: int) -> str:
        return self.weight(index, self.constant(index), 0)

    def conv(self, op: Op, depthwise: bool) -> None:
        o = op.options
        if op.inputs[0] in self.folded_pads:
            source, pads = self.folded_pads[op.inputs[0]]
            x, padding = self.out.values[source], {"pads": pads}
        else:
            x, padding = self.out.values[op.inputs[0]], _conv_padding(o, self.constant(op.inputs[1]).shape[1:3])
        w = self.constant(op.inputs[1])
        if depthwise:
            # TFLite [1, KH, KW, C*M] -> ONNX [C*M, 1, KH, KW], one group per input channel.
            data = w.transpose(3, 0, 1, 2)
            group = self.tensor(op.inputs[0]).shape[3]
        else:
            data = w.transpose(0, 3, 1, 2)
            group = 1
        weight = self.weight(op.inputs[1], data, 0)
        y = self.b.node(
            "Conv",
            [x, weight, self.bias(op.inputs[2])],
            self.hint(op.outputs[0]),
            kernel_shape=list(data.shape[2:]),
            strides=list(o["strides"]),
            dilations=list(o["dilations"]),
            group=group,
            **padding,
        )
        self.emit_output(y, op.outputs[0], o["activation"])

    def average_pool(self, op: Op) -> None:
        x = self.out.values[op.inputs[0]]
        in_shape = self.tensor(op.inputs[0]).shape
        o = op.options
        if o["padding"] == "VALID" and tuple(o["kernel"]) == tuple(in_shape[1:3]):
            # A pool over the whole map: keep it global so any input size works.
            y = self.b.node("GlobalAveragePool", [x], self.hint(op.outputs[0]))
        else:
            y = self.b.node(
                "AveragePool",
                [x],
                self.hint(op.outputs[0]),
                kernel_shape=list(o["kernel"]),
                strides=list(o["strides"]),
                auto_pad="SAME_UPPER" if o["padding"] == "SAME" else "VALID",
            )
        self.emit_output(y, op.outputs[0], o["activation"])

    def mean(self, op: Op) -> None:
        axes = sorted(int(a) for a in self.tensor(op.inputs[1]).data.reshape(-1))
        if axes != [1, 2]:
            raise ValueError(f"MEAN over axes {axes} is not supported (only spatial)")
        y = self.b.node("GlobalAveragePool", [self.out.values[op.inputs[0]]], self.hint(op.outputs[0]))
        if not op.options.get("keep_dims", False):
            y = self.b.node("Flatten", [y], f"{self.hint(op.outputs[0])}_flat", axis=1)
        self.emit_output(y, op.outputs[0], None)

    def reshape(self, op: Op) -> None:
        target = self.tensor(op.outputs[0]).shape
        if len(target) == 3 and len(self.tensor(op.inputs[0]).shape) == 4:
            tflite_float_ops.reshape_to_rows(self, op)
            return
        if len(target) != 2:
            raise ValueError(f"RESHAPE to {target} is not supported (only to [N, C] or from NHWC to [N, rows, K])")
        y = self.b.node("Flatten", [self.out.values[op.inputs[0]]], self.hint(op.outputs[0]), axis=1)
        self.emit_output(y, op.outputs[0], None)

    def fully_connected(self, op: Op) -> None:
        x = self.out.values[op.inputs[0]]
        if len(self.tensor(op.inputs[0]).shape) != 2:
            x = self.b.node("Flatten", [x], f"{self.hint(op.outputs[0])}_in", axis=1)
        weight = self.weight(op.inputs[1], self.constant(op.inputs[1]), 0)
        y = self.b.node("Gemm", [x, weight, self.bias(op.inputs[2])], self.hint(op.outputs[0]), transB=1)
        self.emit_output(y, op.outputs[0], op.options["activation"])

    def add(self, op: Op) -> None:
        a, b = (self.out.values[i] for i in op.inputs)
        y = self.b.node("Add", [a, b], self.hint(op.outputs[0]))
        self.emit_output(y, op.outputs[0], op.options["activation"])

    def concatenation(self, op: Op) -> None:
        rank = len(self.tensor(op.outputs[0]).shape)
        axis = op.options["axis"]
        if rank == 4:
            axis = _NHWC_TO_NCHW_AXIS[axis]
        y = self.b.node("Concat", [self.out.values[i] for i in op.inputs], self.hint(op.outputs[0]), axis=axis)
        self.emit_output(y, op.outputs[0], op.options["activation"])

    def spatial_reference(self, size: tuple[int, int], default: str) -> str:
        """A live value whose H, W equal `size` at the native resolution, so resizes follow the input."""
        if tuple(self.tensor(self.g.inputs[0]).shape[1:3]) == size:
            return self.image
        for index in reversed(self.out.produced):
            shape = self.out.shapes[index]
            if len(shape) == 4 and tuple(shape[1:3]) == size:
                return self.out.values[index]
        return default

    def resize_bilinear(self, op: Op) -> None:
        x = self.out.values[op.inputs[0]]
        size = tuple(int(v) for v in self.tensor(op.inputs[1]).data)
        hint = self.hint(op.outputs[0])
        reference = self.spatial_reference(size, x)
        n_c = self.b.node("Shape", [x], f"{hint}_nc", start=0, end=2)
        h_w = self.b.node("Shape", [reference], f"{hint}_hw", start=2, end=4)
        sizes = self.b.node("Concat", [n_c, h_w], f"{hint}_sizes", axis=0)
        o = op.options
        if o["align_corners"]:
            mode = "align_corners"
        elif o["half_pixel_centers"]:
            mode = "half_pixel"
        else:
            mode = "asymmetric"
        y = self.b.node("Resize", [x, "", "", sizes], hint, mode="linear", coordinate_transformation_mode=mode)
        self.emit_output(y, op.outputs[0], None)

    def quantize(self, op: Op) -> None:
        # A requantization: the float edge is already there, only the grid changes.
        self.emit_output(self.out.values[op.inputs[0]], op.outputs[0], None)

    def run(self, bound: dict[int, str]) -> Imported:
        self.out.values.update(bound)
        for index in self.g.inputs:
            if index not in bound:
                tensor = self.tensor(index)
                self.out.values[index] = (
                    self.image
                    if tensor.quant is None
                    else self.b.qdq(self.image, tensor.quant, tensor.dtype, self.hint(index))
                )
            self.out.shapes[index] = self.tensor(index).shape
        handlers = {
            "CONV_2D": lambda op: self.conv(op, depthwise=False),
            "DEPTHWISE_CONV_2D": lambda op: self.conv(op, depthwise=True),
            "AVERAGE_POOL_2D": self.average_pool,
            "MEAN": self.mean,
            "RESHAPE": self.reshape,
            "FULLY_CONNECTED": self.fully_connected,
            "ADD": self.add,
            "CONCATENATION": self.concatenation,
            "RESIZE_BILINEAR": self.resize_bilinear,
            "QUANTIZE": self.quantize,
            **tflite_float_ops.handlers(self),
        }
        for op in self.g.ops:
            if op.kind in _TERMINAL:
                self.out.head = self.out.values[op.inputs[0]]
                break
            if op.kind not in handlers:
                raise ValueError(f"TFLite op {op.kind} is not supported by this converter")
            handlers[op.kind](op)
            if op.kind == "MEAN" or (op.kind == "AVERAGE_POOL_2D" and self.tensor(op.outputs[0]).shape[1:3] == (1, 1)):
                self.out.pooled = self.out.values[op.outputs[0]]
                self.out.pooled_dim = self.tensor(op.outputs[0]).shape[-1]
        if self.out.head is None:
            self.out.head = self.out.values[self.g.outputs[0]]
        return self.out


def import_graph(
    builder: OnnxBuilder, graph: Graph, prefix: str, image: str, bound: dict[int, str] | None = None
) -> Imported:
    """Append `graph`'s ops to `builder`; `bound` feeds graph inputs from values already built."""
    return _Importer(builder, graph, prefix, image).run(bound or {})


def feature_maps(imported: Imported, resolution: int, strides: tuple[int, ...]) -> dict[int, tuple[str, int]]:
    """The last produced NHWC tensor at each stride: (ONNX value, channels)."""
    found: dict[int, tuple[str, int]] = {}
    for index in imported.produced:
        shape = imported.shapes[index]
        for stride in strides:
            side = -(-resolution // stride)
            if len(shape) == 4 and shape[1:3] == (side, side):
                found[stride] = (imported.values[index], shape[3])
    missing = set(strides) - set(found)
    if missing:
        raise ValueError(f"no feature map at strides {sorted(missing)}")
    return found


def finish(
    builder: OnnxBuilder,
    name: str,
    image: str,
    outputs: dict[str, tuple[str, list]],
) -> onnx.ModelProto:
    """Wrap the nodes into a model with one `image` input and the named outputs."""
    output_infos = []
    for out_name, (value, dims) in outputs.items():
        builder.nodes.append(helper.make_node("Identity", [value], [out_name], name=out_name))
        output_infos.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT, dims))
    graph = helper.make_graph(
        builder.nodes,
        name,
        [helper.make_tensor_value_info(image, TensorProto.FLOAT, ["N", 3, "H", "W"])],
        output_infos,
        initializer=builder.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="mobilenet-serve model_store.build",
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def slice_classes(builder: OnnxBuilder, logits: str, start: int, end: int) -> str:
    """Drop TF's background column so class ids mean the same in every ImageNet variant."""
    starts = builder.const(np.array([start], dtype=np.int64), "slice_start")
    ends = builder.const(np.array([end], dtype=np.int64), "slice_end")
    axes = builder.const(np.array([1], dtype=np.int64), "slice_axes")
    return builder.node("Slice", [logits, starts, ends, axes], "logits_1000")


def flatten(builder: OnnxBuilder, value: str, hint: str) -> str:
    return builder.node("Flatten", [value], hint, axis=1)
