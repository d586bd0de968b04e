"""A user's TFLite classifier as a plain ONNX graph, through the converter the store's own variants are built with.

The result has the store's input (`image`, NCHW float) and one output, `logits` (what a final Softmax
was given); onnx_import.py then finds its embedding and feature maps as it does in any ONNX model.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from . import tflite_reader
from .onnx_builder import OnnxBuilder
from .onnx_import import ImportProblem
from .tflite_to_onnx import finish, import_graph


def from_tflite(path: Path) -> tuple[onnx.ModelProto, int]:
    """The ONNX classifier and the input size the TFLite graph was built for."""
    try:
        graph = tflite_reader.read(path)
    except ValueError as exc:
        raise ImportProblem(str(exc)) from exc
    except Exception as exc:  # flatbuffers raises whatever a misread offset leads to
        raise ImportProblem(f"{path} is not a TFLite model ({type(exc).__name__}: {exc})") from exc
    shape = graph.tensors[graph.inputs[0]].shape
    if len(graph.inputs) != 1 or len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2]:
        raise ImportProblem(f"{path}: expected one square NHWC image input with 3 channels, found {shape}")
    builder = OnnxBuilder()
    try:
        imported = import_graph(builder, graph, "t_", "image")
    except ValueError as exc:
        raise ImportProblem(f"{path}: {exc}") from exc
    classes = graph.tensors[graph.outputs[0]].shape[-1]
    assert imported.head is not None  # import_graph always sets it
    return finish(builder, path.stem, "image", {"logits": (imported.head, ["N", classes])}), shape[1]
