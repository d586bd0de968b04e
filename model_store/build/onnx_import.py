"""Read a user's ONNX classifier and rewrite it as the store serves its variants.

The store's graphs have one float input `image` [N, 3, H, W] and the outputs `logits`, `embedding` and
`features_s8/16/32` (tasks.py). A user's graph has its own names and layout: this module finds the image
input (NCHW or NHWC), the logits (before any final Softmax, since the service applies its own), the
pooled embedding that feeds the classifier, and the last feature map at strides 8, 16 and 32, and
exposes each under the store's name, with a symbolic batch (and symbolic height and width, which the
import command then tries at other sizes). Every problem is an ImportProblem naming what is wrong.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from service.runtime import INPUT_NAME

STRIDES = (8, 16, 32)
# Operators of domains other than ONNX's own that ONNX Runtime implements.
RUNTIME_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}
POOLS = {"GlobalAveragePool", "ReduceMean", "AveragePool"}
QDQ = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}
# How far back from the logits the pooled embedding may be (Flatten, Reshape, quantize pairs, Dropout between).
EMBEDDING_SEARCH_DEPTH = 12


class ImportProblem(ValueError):
    """Why a model cannot become a store entry, in words for the person importing it."""


@dataclass
class Found:
    layout: str  # of the user's input: NCHW or NHWC
    resolution: int | None  # the input's fixed height and width; None when symbolic
    logits: str
    classes: int
    embedding: str | None  # the pooled [N, C, 1, 1] or [N, C] tensor before the classifier
    embedding_dim: int | None
    features: dict[int, tuple[str, int, bool]] = field(default_factory=dict)  # stride: value, channels, NHWC
    precision: str = "fp32"


def load(data: bytes, source: str) -> onnx.ModelProto:
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError and others, none of them public
        raise ImportProblem(f"{source} is not an ONNX model ({type(exc).__name__}: {exc})") from exc
    if not model.graph.node:
        raise ImportProblem(f"{source} is not an ONNX model (it has no graph)")
    unsupported = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in RUNTIME_DOMAINS})
    if unsupported:
        raise ImportProblem(f"{source} uses operators ONNX Runtime does not have: {', '.join(unsupported)}")
    return model


def inspect(model: onnx.ModelProto, source: str, classes: int | None, resolution: int | None) -> Found:
    """What the graph offers; `classes` is the label count when the user gave labels."""
    image = _image_input(model, source)
    dims = _dims(image)
    layout = "NCHW" if dims[1] == 3 else "NHWC"
    spatial = dims[2:4] if layout == "NCHW" else dims[1:3]
    fixed = spatial[0] if spatial[0] == spatial[1] and isinstance(spatial[0], int) and spatial[0] > 0 else None
    if fixed is None and any(isinstance(d, int) and d > 0 for d in spatial):
        raise ImportProblem(f"{source}: the input {image.name} is not square ({spatial[0]}x{spatial[1]})")
    size = resolution or fixed
    if size is None:
        raise ImportProblem(f"{source}: the input {image.name} has no fixed size; give --resolution")
    shapes = _shapes(model, image.name, layout, size)
    logits, count = _logits(model, source, shapes, classes)
    embedding = _embedding(model, logits)
    found = Found(layout, fixed, logits, count, embedding, None)
    if embedding is not None:
        found.embedding_dim = shapes[embedding][1]
    found.features = _features(model, shapes, size)
    found.precision = "int8" if any(node.op_type in QDQ for node in model.graph.node) else "fp32"
    return found


def rewrite(model: onnx.ModelProto, found: Found) -> onnx.ModelProto:
    """The graph with the store's input and outputs, batch and size symbolic."""
    model, found = _renamed_apart(model, found)
    graph = model.graph
    user_input = _image_input(model, "model").name
    nodes = list(graph.node)
    if found.layout == "NHWC":
        nodes.insert(0, helper.make_node("Transpose", [INPUT_NAME], [user_input], perm=[0, 2, 3, 1]))
    else:
        nodes.insert(0, helper.make_node("Identity", [INPUT_NAME], [user_input]))
    outputs: dict[str, tuple[str, list[str | int | None]]] = {"logits": (found.logits, ["N", found.classes])}
    if found.embedding is not None:
        flat = found.embedding + "__flat"
        nodes.append(helper.make_node("Flatten", [found.embedding], [flat], axis=1))
        outputs["embedding"] = (flat, ["N", found.embedding_dim])
    if len(found.features) == len(STRIDES):
        for stride, (value, channels, nhwc) in found.features.items():
            if nhwc:
                nodes.append(helper.make_node("Transpose", [value], [value + "__nchw"], perm=[0, 3, 1, 2]))
                value += "__nchw"
            outputs[f"features_s{stride}"] = (value, ["N", channels, f"H{stride}", f"W{stride}"])
    output_infos = []
    for name, (value, dims) in outputs.items():
        nodes.append(helper.make_node("Identity", [value], [name]))
        output_infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
    initializers = [_batch_free(init, nodes) for init in graph.initializer]
    new_graph = helper.make_graph(
        nodes, graph.name or "imported",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, "H", "W"])],
        output_infos, initializer=initializers,
    )  # fmt: skip
    rewritten = helper.make_model(new_graph, opset_imports=model.opset_import, producer_name="mobilenet-serve import")
    rewritten.ir_version = model.ir_version
    return rewritten


def _renamed_apart(model: onnx.ModelProto, found: Found) -> tuple[onnx.ModelProto, Found]:
    """A copy whose values do not use the names the store gives its input and outputs (`__user` appended)."""
    reserved = {INPUT_NAME, "logits", "embedding", *(f"features_s{s}" for s in STRIDES)}
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    used = {v for node in graph.node for v in (*node.input, *node.output)} | {i.name for i in graph.input}
    taken = reserved & used
    if not taken:
        return copy, found

    def fresh(name: str) -> str:
        return f"{name}__user" if name in taken else name

    for node in graph.node:
        node.input[:] = [fresh(v) for v in node.input]
        node.output[:] = [fresh(v) for v in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        value.name = fresh(value.name)
    features = {stride: (fresh(value), channels, nhwc) for stride, (value, channels, nhwc) in found.features.items()}
    embedding = None if found.embedding is None else fresh(found.embedding)
    renamed = Found(found.layout, found.resolution, fresh(found.logits), found.classes, embedding,
                    found.embedding_dim, features, found.precision)  # fmt: skip
    return copy, renamed


def _image_input(model: onnx.ModelProto, source: str) -> onnx.ValueInfoProto:
    weights = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    images = [i for i in inputs if len(_dims(i)) == 4 and i.type.tensor_type.elem_type == TensorProto.FLOAT]
    images = [i for i in images if 3 in (_dims(i)[1], _dims(i)[3])]
    if len(inputs) != 1 or len(images) != 1:
        described = ", ".join(f"{i.name} {_dims(i)}" for i in inputs) or "none"
        raise ImportProblem(
            f"{source}: expected one float image input of 4 dimensions with 3 channels (NCHW or NHWC), "
            f"found inputs: {described}"
        )
    return images[0]


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _shapes(model: onnx.ModelProto, image: str, layout: str, size: int) -> dict[str, list[int]]:
    """Every value's shape for one image of `size` pixels a side."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    value = next(i for i in fixed.graph.input if i.name == image)
    for dim, length in zip(
        value.type.tensor_type.shape.dim, (1, 3, size, size) if layout == "NCHW" else (1, size, size, 3)
    ):
        dim.Clear()
        dim.dim_value = length
    try:
        inferred = shape_inference.infer_shapes(fixed, data_prop=True)
    except Exception as exc:
        raise ImportProblem(f"the graph's shapes cannot be inferred at {size} pixels: {exc}") from exc
    infos = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return {info.name: [d.dim_value for d in info.type.tensor_type.shape.dim] for info in infos}


def _logits(model: onnx.ModelProto, source: str, shapes: dict[str, list[int]], classes: int | None) -> tuple[str, int]:
    producers = {out: node for node in model.graph.node for out in node.output}
    candidates = []
    for output in model.graph.output:
        shape = shapes.get(output.name, [])
        if len(shape) == 2 and shape[1] > 1:
            node = producers.get(output.name)
            # The service applies its own softmax: take what a final Softmax was given.
            name = node.input[0] if node is not None and node.op_type == "Softmax" else output.name
            candidates.append((name, shape[1]))
    if classes is not None:
        matching = [c for c in candidates if c[1] == classes]
        if not matching:
            found = ", ".join(f"{n} ({k} classes)" for n, k in candidates) or "no [N, classes] output"
            raise ImportProblem(f"the labels file has {classes} lines but the model's outputs are: {found}")
        candidates = matching
    # A graph that already follows the store's names (torch_import.py exports one) says which are the logits.
    candidates = [c for c in candidates if c[0] == "logits"] or candidates
    if len(candidates) != 1:
        raise ImportProblem(f"{source}: expected one [N, classes] output for the logits, found {len(candidates)}")
    return candidates[0]


def _embedding(model: onnx.ModelProto, logits: str) -> str | None:
    """The output of the nearest pooling node upstream of the logits: the image's pooled features."""
    producers = {out: node for node in model.graph.node for out in node.output}
    weights = {init.name for init in model.graph.initializer}
    queue = deque([(logits, 0)])
    while queue:
        value, depth = queue.popleft()
        node = producers.get(value)
        if node is None or depth > EMBEDDING_SEARCH_DEPTH:
            continue
        if node.op_type in POOLS and depth > 0:
            return value
        queue.extend((name, depth + 1) for name in node.input if name and name not in weights)
    return None


def _features(model: onnx.ModelProto, shapes: dict[str, list[int]], size: int) -> dict[int, tuple[str, int, bool]]:
    """The feature map at each stride: NCHW [1, C, s, s], or NHWC [1, s, s, C] as a flag.

    At strides 8 and 16 a residual network's block output (the last Add there) is taken, as torchvision's
    V2 in the store exposes it, rather than the expanded tensor of the block that leaves the stride; at
    32, and where nothing is added, the last value at the stride.
    """
    last: dict[int, tuple[str, int, bool]] = {}
    added: dict[int, tuple[str, int, bool]] = {}
    for node in model.graph.node:
        for value in node.output:
            shape = shapes.get(value, [])
            if len(shape) != 4 or shape[0] != 1:
                continue
            for stride in STRIDES:
                side = -(-size // stride)
                if shape[2:] == [side, side] and shape[1] != side:
                    last[stride] = (value, shape[1], False)
                elif shape[1:3] == [side, side]:
                    last[stride] = (value, shape[3], True)
                else:
                    continue
                if node.op_type == "Add":
                    added[stride] = last[stride]
    return {stride: added.get(stride, found) if stride != STRIDES[-1] else found for stride, found in last.items()}


def _batch_free(initializer: onnx.TensorProto, nodes: list[onnx.NodeProto]) -> onnx.TensorProto:
    """A Reshape's target shape that fixes the batch at 1 becomes -1, so that batches of any size pass."""
    if initializer.data_type != TensorProto.INT64 or len(initializer.dims) != 1:
        return initializer
    if not any(node.op_type == "Reshape" and node.input[1] == initializer.name for node in nodes):
        return initializer
    shape = numpy_helper.to_array(initializer)
    if shape.size < 2 or shape[0] != 1 or -1 in shape[1:]:
        return initializer
    return numpy_helper.from_array(np.concatenate([[-1], shape[1:]]).astype(np.int64), initializer.name)
