"""Write a variant's manifest.json from facts the builder knows and facts read off the graph."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import shape_inference

SOURCES = Path(__file__).resolve().parent.parent / "sources"

# Inputs that carry quantization parameters or shapes, not learned weights.
_NON_WEIGHT_SLOTS = {
    "QuantizeLinear": {1, 2},
    "DequantizeLinear": {1, 2},
    "Reshape": {1},
    "Resize": {1, 2, 3},
    "Slice": {1, 2, 3, 4},
    "Pad": {1, 2, 3},
    "Clip": {1, 2},
    "ReduceMean": {1},
    "Squeeze": {1},
    "Unsqueeze": {1},
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def count_params(model: onnx.ModelProto) -> int:
    """Elements of every initializer used as a weight or bias (quantized or not)."""
    weight_names: set[str] = set()
    for node in model.graph.node:
        skip = _NON_WEIGHT_SLOTS.get(node.op_type, set())
        weight_names.update(name for i, name in enumerate(node.input) if i not in skip)
    return int(
        sum(
            int(np.prod(init.dims))
            for init in model.graph.initializer
            if init.name in weight_names and len(init.dims) >= 1
        )
    )


def count_macs(model: onnx.ModelProto, resolution: int) -> int:
    """Multiply-accumulates of Conv, Gemm and MatMul for one image at `resolution`."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    dims = fixed.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, 3, resolution, resolution)):
        dim.Clear()
        dim.dim_value = value
    inferred = shape_inference.infer_shapes(fixed, data_prop=True)
    shapes: dict[str, list[int]] = {}
    for value_info in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        shapes[value_info.name] = [d.dim_value for d in value_info.type.tensor_type.shape.dim]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    macs = 0
    for node in inferred.graph.node:
        if node.op_type == "Conv":
            out = shapes[node.output[0]]
            weight = shapes[node.input[1]]
            macs += int(np.prod(out)) * int(np.prod(weight[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            # Each output element sums over the shared dimension: A's last, or its first under Gemm's transA.
            a, out = shapes[node.input[0]], shapes[node.output[0]]
            transposed = any(attr.name == "transA" and attr.i for attr in node.attribute)
            macs += int(np.prod(out)) * (a[0] if transposed else a[-1])
    return macs


def write_variant(
    variant_dir: Path,
    model: onnx.ModelProto,
    facts: dict[str, Any],
    labels: list[str],
    source_file: str | tuple[str, ...],
    license_name: str,
    origin: str,
) -> dict[str, Any]:
    """Save model.onnx, labels.txt and manifest.json into `variant_dir`.

    `facts` holds what only the builder knows (family, alpha, resolutions, tasks,
    preprocess, label_space, embedding_dim, feature_strides, published...).
    """
    files = [source_file] if isinstance(source_file, str) else list(source_file)
    variant_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = variant_dir / "model.onnx"
    onnx.save_model(model, str(onnx_path))
    (variant_dir / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    manifest = {
        "name": variant_dir.name,
        **facts,
        "onnx": "model.onnx",
        "labels": "labels.txt",
        "num_classes": len(labels),
        "params": count_params(model),
        "macs": count_macs(model, facts["native_resolution"]),
        "file_size": onnx_path.stat().st_size,
        "sha256": sha256_of(onnx_path),
        "source": {
            "files": [{"file": name, "sha256": sha256_of(SOURCES / name)} for name in files],
            "license": license_name,
            "origin": origin,
        },
    }
    (variant_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def copy_labels(name: str) -> list[str]:
    return (SOURCES / name).read_text(encoding="utf-8").splitlines()

