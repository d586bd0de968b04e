"""Converter behaviour that parity on the shipped models does not reach."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper

from model_store.build.onnx_builder import OnnxBuilder
from model_store.build.tflite_reader import Graph, Op, Quant, Tensor
from model_store.build.tflite_to_onnx import _conv_padding, import_graph


def _tensor(index: int, shape: tuple[int, ...]) -> Tensor:
    quant = Quant(scale=np.array([0.1], np.float32), zero_point=np.array([128]), axis=0)
    return Tensor(index, f"t{index}", shape, np.uint8, quant, None)


def test_unsupported_op_is_refused_by_name() -> None:
    graph = Graph(
        tensors=[_tensor(0, (1, 8, 8, 3)), _tensor(1, (1, 8, 8, 3))],
        ops=[Op("SQUARED_DIFFERENCE", [0, 0], [1])],
        inputs=[0],
        outputs=[1],
    )
    with pytest.raises(ValueError, match="SQUARED_DIFFERENCE is not supported"):
        import_graph(OnnxBuilder(), graph, "x_", "image")


def test_integer_tensors_without_quantization_are_refused() -> None:
    """Float tensors pass as float (MediaPipe's graphs); an integer one without scale and zero point has no meaning."""
    int_out = Tensor(1, "i", (1, 8, 8, 3), np.int8, None, None)
    graph = Graph(
        tensors=[_tensor(0, (1, 8, 8, 3)), int_out],
        ops=[Op("ADD", [0, 0], [1], {"activation": None})],
        inputs=[0],
        outputs=[1],
    )
    with pytest.raises(ValueError, match="int8 but not quantized"):
        import_graph(OnnxBuilder(), graph, "x_", "image")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"padding": "VALID", "strides": (1, 1), "dilations": (1, 1)}, {"auto_pad": "VALID"}),
        ({"padding": "SAME", "strides": (2, 2), "dilations": (1, 1)}, {"auto_pad": "SAME_UPPER"}),
        ({"padding": "SAME", "strides": (1, 1), "dilations": (1, 1)}, {"pads": [1, 1, 1, 1]}),
        # Atrous 3x3 with rate 2 covers 5 pixels: 2 on each side, whatever the input size.
        ({"padding": "SAME", "strides": (1, 1), "dilations": (2, 2)}, {"pads": [2, 2, 2, 2]}),
    ],
)
def test_same_padding(options: dict, expected: dict) -> None:
    assert _conv_padding(options, (3, 3)) == expected


def test_uint8_weights_become_signed_exactly() -> None:
    builder = OnnxBuilder()
    data = np.array([[0, 128, 255]], dtype=np.uint8)
    quant = Quant(scale=np.array([0.5], np.float32), zero_point=np.array([100]), axis=0)
    builder.dequantized_const(data, quant, 0, "w")
    arrays = {init.name: numpy_helper.to_array(init) for init in builder.initializers}
    weight, zero = arrays["w_int"], arrays["w_zero"]
    assert weight.dtype == np.int8
    np.testing.assert_array_equal(weight.astype(int) - int(zero), data.astype(int) - 100)
