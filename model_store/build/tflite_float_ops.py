"""The ops of MediaPipe's float graphs (BlazeFace, selfie segmentation) that the quantized ones lack.

MediaPipe stores weights as fp16 (DEQUANTIZE turns them into float32 at load) and, in the full-range
face detector, sparse (DENSIFY). Both are constants here: the converter keeps their values and writes
the weights once, instead of ops that would rebuild them on every run. The rest are activations and
layout ops of BlazeFace's blocks and MobileNetV3's (hard-swish, squeeze-and-excitation's sigmoid and
product), and MediaPipe's own transposed convolution with bias.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from .tflite_reader import CUSTOM_TRANSPOSE_CONV, Op

if TYPE_CHECKING:
    from .tflite_to_onnx import _Importer


def handlers(importer: _Importer) -> dict[str, Callable[[Op], None]]:
    def bind(function: Callable[[_Importer, Op], None]) -> Callable[[Op], None]:
        return lambda op: function(importer, op)

    return {
        "DEQUANTIZE": bind(dequantize),
        "DENSIFY": bind(densify),
        "RELU": bind(lambda imp, op: _unary(imp, op, "Relu")),
        "LOGISTIC": bind(lambda imp, op: _unary(imp, op, "Sigmoid")),
        # ONNX HardSwish is x * max(0, min(1, x / 6 + 1 / 2)), TFLite's x * relu6(x + 3) / 6.
        "HARD_SWISH": bind(lambda imp, op: _unary(imp, op, "HardSwish")),
        "MUL": bind(mul),
        "PAD": bind(pad),
        "MAX_POOL_2D": bind(max_pool),
        "DEPTH_TO_SPACE": bind(depth_to_space),
        CUSTOM_TRANSPOSE_CONV: bind(transpose_conv_bias),
    }


def dequantize(imp: _Importer, op: Op) -> None:
    """fp16 (or densified fp16) weights: kept as constants, written where an op reads them as weights."""
    source = imp.tensor(op.inputs[0])
    if source.data is None and op.inputs[0] not in imp.constants:
        raise ValueError(f"DEQUANTIZE of the live tensor {source.name} is not supported (only of constants)")
    imp.constants[op.outputs[0]] = imp.constant(op.inputs[0])


def densify(imp: _Importer, op: Op) -> None:
    # The reader already expanded the sparse values (tflite_reader.densify).
    imp.constants[op.outputs[0]] = imp.constant(op.inputs[0])


def _unary(imp: _Importer, op: Op, onnx_op: str) -> None:
    y = imp.b.node(onnx_op, [imp.out.values[op.inputs[0]]], imp.hint(op.outputs[0]))
    imp.emit_output(y, op.outputs[0], None)


def mul(imp: _Importer, op: Op) -> None:
    a, b = (imp.out.values[i] for i in op.inputs)
    y = imp.b.node("Mul", [a, b], imp.hint(op.outputs[0]))
    imp.emit_output(y, op.outputs[0], op.options.get("activation"))


def pad(imp: _Importer, op: Op) -> None:
    """Zero padding; BlazeFace pads channels to widen a residual, the full-range model pads H and W.

    Padding of H and W alone that only a VALID convolution reads becomes that convolution's pads: the same
    zeros, without a padded copy of the map (a fifth of the full-range detector's time as separate Pads).
    """
    nhwc = imp.constant(op.inputs[1]).astype(np.int64)  # [[before, after] per NHWC axis]
    readers = imp.readers.get(op.outputs[0], [])
    spatial_only = not nhwc[0].any() and not nhwc[3].any()
    if (
        spatial_only
        and op.outputs[0] not in imp.g.outputs
        and len(readers) == 1
        and readers[0].kind in ("CONV_2D", "DEPTHWISE_CONV_2D")
        and readers[0].inputs[0] == op.outputs[0]
        and readers[0].options["padding"] == "VALID"
    ):
        imp.folded_pads[op.outputs[0]] = (
            op.inputs[0],
            [int(nhwc[1][0]), int(nhwc[2][0]), int(nhwc[1][1]), int(nhwc[2][1])],
        )
        return
    order = (0, 3, 1, 2)
    pads = np.array([nhwc[axis][0] for axis in order] + [nhwc[axis][1] for axis in order], dtype=np.int64)
    y = imp.b.node("Pad", [imp.out.values[op.inputs[0]], imp.b.const(pads, "pads")], imp.hint(op.outputs[0]))
    imp.emit_output(y, op.outputs[0], None)


def max_pool(imp: _Importer, op: Op) -> None:
    o = op.options
    y = imp.b.node(
        "MaxPool",
        [imp.out.values[op.inputs[0]]],
        imp.hint(op.outputs[0]),
        kernel_shape=list(o["kernel"]),
        strides=list(o["strides"]),
        auto_pad="SAME_UPPER" if o["padding"] == "SAME" else "VALID",
    )
    imp.emit_output(y, op.outputs[0], o["activation"])


def depth_to_space(imp: _Importer, op: Op) -> None:
    # TF's NHWC depth_to_space orders the moved channels as ONNX's DCR mode does.
    y = imp.b.node(
        "DepthToSpace",
        [imp.out.values[op.inputs[0]]],
        imp.hint(op.outputs[0]),
        blocksize=int(op.options["block_size"]),
        mode="DCR",
    )
    imp.emit_output(y, op.outputs[0], None)


def transpose_conv_bias(imp: _Importer, op: Op) -> None:
    """MediaPipe's Convolution2DTransposeBias: TFLite's TRANSPOSE_CONV weights [O, KH, KW, I], plus a bias."""
    data = imp.constant(op.inputs[1]).transpose(3, 0, 1, 2)  # ONNX ConvTranspose: [I, O, KH, KW]
    o = op.options
    y = imp.b.node(
        "ConvTranspose",
        [imp.out.values[op.inputs[0]], imp.weight(op.inputs[1], data, 1), imp.bias(op.inputs[2])],
        imp.hint(op.outputs[0]),
        kernel_shape=list(data.shape[2:]),
        strides=list(o["strides"]),
        auto_pad="SAME_UPPER" if o["padding"] == "SAME" else "VALID",
    )
    imp.emit_output(y, op.outputs[0], None)


def reshape_to_rows(imp: _Importer, op: Op) -> None:
    """NHWC [N, H, W, C] to [N, H*W*C/K, K], as a detector's head lays out its anchors.

    The element order is TFLite's (NHWC), so the NCHW value goes back to NHWC first; the batch stays free.
    """
    rows_of = imp.tensor(op.outputs[0]).shape[2]
    hint = imp.hint(op.outputs[0])
    nhwc = imp.b.node("Transpose", [imp.out.values[op.inputs[0]]], f"{hint}_nhwc", perm=[0, 2, 3, 1])
    shape = imp.b.const(np.array([0, -1, rows_of], dtype=np.int64), "rows_shape")
    y = imp.b.node("Reshape", [nhwc, shape], hint)
    imp.emit_output(y, op.outputs[0], None)
