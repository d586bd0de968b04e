"""The ONNX graph a converter builds: unique names, shared constants, and the QDQ and weight patterns.

Quantized TFLite tensors become QuantizeLinear/DequantizeLinear pairs and integer weights behind
DequantizeLinear; float ones (MediaPipe's fp16) become float weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .tflite_reader import Quant


@dataclass
class OnnxBuilder:
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    _names: set[str] = field(default_factory=set)
    _consts: dict[tuple, str] = field(default_factory=dict)

    def name(self, hint: str) -> str:
        base = hint.replace(":", "_").replace(";", "_")
        candidate, i = base, 0
        while candidate in self._names:
            i += 1
            candidate = f"{base}_{i}"
        self._names.add(candidate)
        return candidate

    def const(self, array: np.ndarray, hint: str) -> str:
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = self.unique_const(array, hint)
        return self._consts[key]

    def unique_const(self, array: np.ndarray, hint: str) -> str:
        """An initializer of its own, never shared with an equal one."""
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op_type: str, inputs: list[str], hint: str, **attrs) -> str:
        out = self.name(hint)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def qdq(self, value: str, quant: Quant, dtype: type, hint: str) -> str:
        """Round a float edge to the TFLite tensor's integer grid and back.

        int8 grids are written as the same grid in uint8 (zero point + 128, exact), since
        ONNX Runtime's fastest x86 kernels take unsigned activations.
        """
        zero_point = int(quant.zero_point[0]) + (128 if dtype == np.int8 else 0)
        scale = self.const(np.float32(quant.scale[0]), "scale")
        zero = self.const(np.array(zero_point, dtype=np.uint8), "zero_point")
        q = self.node("QuantizeLinear", [value, scale, zero], f"{hint}_q")
        return self.node("DequantizeLinear", [q, scale, zero], f"{hint}_dq")

    def float_const(self, data: np.ndarray, hint: str) -> str:
        """A float weight: fp16 stays fp16 in the file, behind a Cast to float32."""
        if data.dtype == np.float16:
            return self.node(
                "Cast", [self.const(np.ascontiguousarray(data), f"{hint}_fp16")], hint, to=TensorProto.FLOAT
            )
        return self.const(np.ascontiguousarray(data, dtype=np.float32), hint)

    def dequantized_const(self, data: np.ndarray, quant: Quant, axis: int, hint: str) -> str:
        """An integer initializer behind DequantizeLinear (per-tensor or per-channel on `axis`)."""
        zeros = quant.zero_point
        if data.dtype == np.uint8:
            # Shifting values and zero point by 128 is exact, and signed weights take ONNX
            # Runtime's faster u8s8 kernels (VNNI) instead of the u8u8 path.
            data = (data.astype(np.int16) - 128).astype(np.int8)
            zeros = zeros - 128
        weight = self.const(np.ascontiguousarray(data), f"{hint}_int")
        per_channel = quant.scale.size > 1
        scale = self.const(quant.scale if per_channel else np.float32(quant.scale[0]), f"{hint}_scale")
        zeros = zeros.astype(data.dtype)
        # Each weight has its own zero point: on x86 CPUs without VNNI the service asks ONNX Runtime to turn int8
        # weights into uint8 (`session.x64quantprecision`), which rewrites every weight's zero point and fails
        # on one that several weights share ("Attempt to replace the existing tensor", onnxruntime 1.32).
        zero = self.unique_const(zeros if per_channel else np.array(zeros[0], dtype=data.dtype), f"{hint}_zero")
        attrs = {"axis": axis} if per_channel else {}
        return self.node("DequantizeLinear", [weight, scale, zero], f"{hint}_w", **attrs)
