"""Each op of MediaPipe's float graphs on its own: a one-op TFLite graph converted and run by ONNX Runtime,
against what TFLite's op computes (written out in numpy), on random NHWC inputs.

DENSIFY is checked on the real sparse source against the TFLite interpreter's own densified tensor.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from onnx import TensorProto, helper
from support import STORE

from model_store.build import tflite_reader
from model_store.build.onnx_builder import OnnxBuilder
from model_store.build.tflite_reader import CUSTOM_TRANSPOSE_CONV, Graph, Op, Tensor
from model_store.build.tflite_to_onnx import OPSET, import_graph

RNG = np.random.default_rng(21)
# float32 arithmetic in two runtimes: only summation order differs.
TOLERANCE = 1e-5


def _float(index: int, shape: tuple[int, ...], data: np.ndarray | None = None) -> Tensor:
    dtype = np.float32 if data is None else data.dtype.type
    return Tensor(index, f"t{index}", shape, dtype, None, data)


def _run(tensors: list[Tensor], ops: list[Op], x: np.ndarray, extra_inputs: dict[int, np.ndarray] | None = None):
    """Convert a graph of `tensors` and `ops` whose input 0 is NHWC `x`; the output, back in NHWC."""
    out = ops[-1].outputs[0]
    graph = Graph(tensors=tensors, ops=ops, inputs=[0], outputs=[out])
    builder = OnnxBuilder()
    imported = import_graph(builder, graph, "x_", "image")
    builder.nodes.append(helper.make_node("Identity", [imported.values[out]], ["y"]))
    graph_proto = helper.make_graph(
        builder.nodes,
        "one_op",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", x.shape[3], "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=builder.initializers,
    )
    model = helper.make_model(graph_proto, opset_imports=[helper.make_opsetid("", OPSET)])
    y = ort.InferenceSession(model.SerializeToString()).run(["y"], {"image": x.transpose(0, 3, 1, 2)})[0]
    return y.transpose(0, 2, 3, 1) if y.ndim == 4 else y


def _x(shape: tuple[int, ...], low: float = -4.0, high: float = 4.0) -> np.ndarray:
    return RNG.uniform(low, high, size=shape).astype(np.float32)


@pytest.mark.parametrize(
    ("kind", "reference"),
    [
        ("HARD_SWISH", lambda x: x * np.clip(x + 3, 0, 6) / 6),
        ("LOGISTIC", lambda x: 1 / (1 + np.exp(-x))),
        ("RELU", lambda x: np.maximum(x, 0)),
    ],
)
def test_activation(kind: str, reference) -> None:
    x = _x((2, 5, 7, 3), -8, 8)
    y = _run([_float(0, (1, 5, 7, 3)), _float(1, (1, 5, 7, 3))], [Op(kind, [0], [1])], x)
    np.testing.assert_allclose(y, reference(x), atol=TOLERANCE)


def test_mul_broadcasts_a_squeeze_and_excitation_gate() -> None:
    """V3's squeeze-and-excitation: the map times a per-channel gate, pooled, convolved and squashed elsewhere."""
    x = _x((2, 6, 6, 4))
    tensors = [_float(0, (1, 6, 6, 4)), _float(1, (1, 1, 1, 4)), _float(2, (1, 1, 1, 4)), _float(3, (1, 6, 6, 4))]
    ops = [
        Op("AVERAGE_POOL_2D", [0], [1], {"padding": "VALID", "strides": (6, 6), "kernel": (6, 6), "activation": None}),
        Op("LOGISTIC", [1], [2]),
        Op("MUL", [0, 2], [3], {"activation": None}),
    ]
    gate = 1 / (1 + np.exp(-x.mean(axis=(1, 2), keepdims=True)))
    np.testing.assert_allclose(_run(tensors, ops, x), x * gate, atol=TOLERANCE)


def test_average_pool_with_a_window() -> None:
    x = _x((1, 8, 8, 3))
    options = {"padding": "VALID", "strides": (2, 2), "kernel": (2, 2), "activation": None}
    y = _run([_float(0, (1, 8, 8, 3)), _float(1, (1, 4, 4, 3))], [Op("AVERAGE_POOL_2D", [0], [1], options)], x)
    np.testing.assert_allclose(y, x.reshape(1, 4, 2, 4, 2, 3).mean(axis=(2, 4)), atol=TOLERANCE)


def test_max_pool_same_padding() -> None:
    """BlazeFace's stride-2 shortcut: 2x2 max pooling, SAME."""
    x = _x((2, 8, 8, 3))
    options = {"padding": "SAME", "strides": (2, 2), "kernel": (2, 2), "activation": None}
    y = _run([_float(0, (1, 8, 8, 3)), _float(1, (1, 4, 4, 3))], [Op("MAX_POOL_2D", [0], [1], options)], x)
    np.testing.assert_array_equal(y, x.reshape(2, 4, 2, 4, 2, 3).max(axis=(2, 4)))


def test_pad_widens_channels_and_space() -> None:
    x = _x((1, 4, 4, 3))
    paddings = np.array([[0, 0], [1, 2], [0, 1], [0, 5]], dtype=np.int32)
    tensors = [_float(0, (1, 4, 4, 3)), Tensor(1, "pads", (4, 2), np.int32, None, paddings), _float(2, (1, 7, 5, 8))]
    y = _run(tensors, [Op("PAD", [0, 1], [2])], x)
    np.testing.assert_array_equal(y, np.pad(x, paddings))


def test_depth_to_space() -> None:
    x = _x((2, 3, 3, 8))
    y = _run([_float(0, (1, 3, 3, 8)), _float(1, (1, 6, 6, 2))], [Op("DEPTH_TO_SPACE", [0], [1], {"block_size": 2})], x)
    # TF: out[n, h*b + i, w*b + j, c] = in[n, h, w, (i*b + j)*C + c]
    expected = x.reshape(2, 3, 3, 2, 2, 2).transpose(0, 1, 3, 2, 4, 5).reshape(2, 6, 6, 2)
    np.testing.assert_array_equal(y, expected)


def test_dequantize_fp16_weights_into_a_convolution() -> None:
    """fp16 weights stay fp16 in the ONNX file (behind a Cast) and compute exactly as their float32 values."""
    weights = RNG.normal(size=(4, 1, 1, 3)).astype(np.float16)
    bias = RNG.normal(size=(4,)).astype(np.float16)
    x = _x((2, 5, 5, 3))
    tensors = [
        _float(0, (1, 5, 5, 3)),
        _float(1, weights.shape, weights),
        _float(2, weights.shape),
        _float(3, bias.shape, bias),
        _float(4, bias.shape),
        _float(5, (1, 5, 5, 4)),
    ]
    conv = {"padding": "VALID", "strides": (1, 1), "dilations": (1, 1), "activation": None}
    ops = [Op("DEQUANTIZE", [1], [2]), Op("DEQUANTIZE", [3], [4]), Op("CONV_2D", [0, 2, 4], [5], conv)]
    expected = x @ weights[:, 0, 0, :].astype(np.float32).T + bias.astype(np.float32)
    np.testing.assert_allclose(_run(tensors, ops, x), expected, atol=TOLERANCE)


def test_dequantize_of_a_live_tensor_is_refused() -> None:
    graph = Graph([_float(0, (1, 2, 2, 3)), _float(1, (1, 2, 2, 3))], [Op("DEQUANTIZE", [0], [1])], [0], [1])
    with pytest.raises(ValueError, match="only of constants"):
        import_graph(OnnxBuilder(), graph, "x_", "image")


def test_convolution_2d_transpose_bias() -> None:
    """MediaPipe's custom op: every input pixel spreads its kernel over a stride x stride block, plus the bias."""
    x = _x((2, 3, 4, 5))
    weights = RNG.normal(size=(2, 2, 2, 5)).astype(np.float32)  # [O, KH, KW, I]
    bias = RNG.normal(size=(2,)).astype(np.float32)
    tensors = [
        _float(0, (1, 3, 4, 5)),
        _float(1, weights.shape, weights),
        _float(2, bias.shape, bias),
        _float(3, (1, 6, 8, 2)),
    ]
    op = Op(CUSTOM_TRANSPOSE_CONV, [0, 1, 2], [3], {"padding": "SAME", "strides": (2, 2)})
    expected = np.einsum("nhwi,okli->nhkwlo", x, weights).reshape(2, 6, 8, 2) + bias
    np.testing.assert_allclose(_run(tensors, [op], x), expected, atol=TOLERANCE)


def test_reshape_to_anchor_rows_keeps_tflite_order() -> None:
    """A detector head's [N, H, W, A*K] becomes [N, H*W*A, K] in NHWC order, with a free batch."""
    x = _x((3, 2, 2, 6))
    y = _run([_float(0, (1, 2, 2, 6)), _float(1, (1, 12, 2))], [Op("RESHAPE", [0], [1])], x)
    np.testing.assert_array_equal(y, x.reshape(3, 12, 2))


def test_densify_matches_the_interpreter() -> None:
    """The full-range detector's sparse fp16 weights, densified by the reader, equal TFLite's DENSIFY outputs."""
    source = STORE / "sources" / "face_detection_full_range_sparse.tflite"
    graph = tflite_reader.read(source)
    # Without XNNPACK, which takes the densified weights over and leaves DENSIFY's own output tensor empty.
    interpreter = Interpreter(
        str(source),
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.zeros((1, 192, 192, 3), np.float32))
    interpreter.invoke()
    densified = [op for op in graph.ops if op.kind == "DENSIFY"]
    assert len(densified) == 46
    for op in densified:
        ours = graph.tensors[op.inputs[0]].data
        np.testing.assert_array_equal(ours, interpreter.get_tensor(op.outputs[0]))


def test_spatial_pad_before_a_valid_convolution_becomes_its_pads() -> None:
    """The full-range detector's PAD + VALID depthwise convolution: one Conv with pads, the same numbers."""
    x = _x((2, 6, 6, 3))
    weights = RNG.normal(size=(1, 3, 3, 3)).astype(np.float32)
    paddings = np.array([[0, 0], [1, 1], [0, 1], [0, 0]], dtype=np.int32)
    tensors = [
        _float(0, (1, 6, 6, 3)),
        Tensor(1, "pads", (4, 2), np.int32, None, paddings),
        _float(2, (1, 8, 7, 3)),
        _float(3, weights.shape, weights),
        _float(4, (3,), np.zeros(3, np.float32)),
        _float(5, (1, 6, 5, 3)),
    ]
    conv = {"padding": "VALID", "strides": (1, 1), "dilations": (1, 1), "activation": None}
    ops = [Op("PAD", [0, 1], [2]), Op("DEPTHWISE_CONV_2D", [2, 3, 4], [5], conv)]
    padded = np.pad(x, paddings)
    expected = np.zeros((2, 6, 5, 3), np.float32)
    for i in range(3):
        for j in range(3):
            expected += padded[:, i : i + 6, j : j + 5, :] * weights[0, i, j]
    np.testing.assert_allclose(_run(tensors, ops, x), expected, atol=TOLERANCE)
    builder = OnnxBuilder()
    import_graph(builder, Graph(tensors, ops, [0], [5]), "x_", "image")
    assert [n.op_type for n in builder.nodes if n.op_type in ("Pad", "Conv")] == ["Conv"]
