"""The committed store is what its manifests and the build say it is."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from support import STORE

from model_store.build import tflite_variants
from model_store.build.manifest import count_macs
from service.runtime import UINT8_WEIGHTS_OPTION

MANIFESTS = sorted(STORE.glob("*/manifest.json"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_store_has_every_variant() -> None:
    names = {p.parent.name for p in MANIFESTS}
    assert {v.name for v in tflite_variants.VARIANTS} <= names
    assert {"mobilenet_v2_1.0_224_tv", "mobilenet_v2_1.0_224_tv_int8"} <= names


@pytest.mark.parametrize("manifest_path", MANIFESTS, ids=lambda p: p.parent.name)
def test_checksums_match_manifest(manifest_path: Path) -> None:
    manifest = json.loads(manifest_path.read_text())
    variant_dir = manifest_path.parent
    assert manifest["name"] == variant_dir.name
    onnx_path = variant_dir / manifest["onnx"]
    assert onnx_path.stat().st_size == manifest["file_size"]
    assert sha256(onnx_path) == manifest["sha256"]
    for source in manifest["source"]["files"]:
        assert sha256(STORE / "sources" / source["file"]) == source["sha256"]
    assert manifest["source"]["license"] in {"Apache-2.0", "BSD-3-Clause"}
    published = manifest.get("published")
    if published is not None:
        assert "published" in published["source"]


@pytest.mark.parametrize("name", ["mobilenet_v1_0.25_128", "mobilenet_v1_1.0_224", "deeplabv3_mnv2_dm05_pascal"])
def test_conversion_is_deterministic(tmp_path: Path, name: str) -> None:
    """Rebuilding from the sources reproduces the committed bytes, so the store cannot drift."""
    tflite_variants.build(tmp_path, {name})
    for file in ("model.onnx", "labels.txt", "manifest.json"):
        assert (tmp_path / name / file).read_bytes() == (STORE / name / file).read_bytes(), file


def test_quantized_sources_stay_small() -> None:
    """int8 sources become int8 graphs: no variant may grow much past its TFLite file."""
    for variant in tflite_variants.VARIANTS:
        source_bytes = sum((STORE / "sources" / s).stat().st_size for s in variant.sources)
        onnx_bytes = (STORE / variant.name / "model.onnx").stat().st_size
        assert onnx_bytes < 1.2 * source_bytes, variant.name


@pytest.mark.parametrize("manifest_path", MANIFESTS, ids=lambda p: p.parent.name)
def test_loads_with_uint8_weights(manifest_path: Path) -> None:
    """Every model opens with the option the service sets on x86 CPUs without VNNI (service/runtime.py).

    Checked on every CPU: a VNNI machine would never set the option, yet a model that breaks it (two weights
    sharing one zero point did, in onnxruntime 1.32) would fail to load on the machines that need it.
    """
    options = ort.SessionOptions()
    options.add_session_config_entry(UINT8_WEIGHTS_OPTION, "1")
    path = manifest_path.parent / json.loads(manifest_path.read_text())["onnx"]
    ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("trans_b", [0, 1])
def test_a_classifier_head_costs_inputs_times_classes(trans_b: int) -> None:
    # torch.onnx.export writes Linear as Gemm with transB=1: the weight is [classes, inputs].
    head = np.zeros((4, 1280) if trans_b else (1280, 4), dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "pointwise"], ["features"]),
            helper.make_node("Flatten", ["features"], ["pooled"]),
            helper.make_node("Gemm", ["pooled", "head"], ["logits"], transB=trans_b),
        ],
        "classifier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 1, 1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
        [
            numpy_helper.from_array(np.zeros((1280, 3, 1, 1), np.float32), "pointwise"),
            numpy_helper.from_array(head, "head"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert count_macs(model, 1) == 1280 * 3 + 1280 * 4
