"""Model stores for the fault-injection tests: copies of real variants, and a fixture model that is slow
or fails on demand. Everything is written under the test's tmp_path; nothing here touches model_store/.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from support import STORE, V1_SMALL

FIXTURE = "fixture_failing_classifier"
FIXTURE_CLASSES = 4
FIXTURE_NATIVE = 128
# At this resolution one image costs ~100 ms of one core, so a batch of 8 keeps the model's instance busy
# for about a second: long enough for other requests to queue up behind it.
FIXTURE_SLOW = 512
# A run fails when any value in its batch reaches this: the batch's maximum indexes a 4-row table.
FIXTURE_FAIL_AT = 1000.0
_MIX_WIDTH = 256
_MIX_LAYERS = 24


def copy_variant(store: Path, source: str = V1_SMALL) -> Path:
    return Path(shutil.copytree(STORE / source, store / source))


def write_fixture_variant(store: Path) -> Path:
    """A classifier with a data-dependent failure: ONNX Runtime raises inside Gather for a poisoned batch.

    logits[n] = mean-pooled RGB @ W + table[int(max over the whole batch)] + (cost term), where every row of
    the table is the same, so a good image's logits do not depend on its batch companions, and a value of
    FIXTURE_FAIL_AT anywhere in the batch is an index out of the table's bounds. The cost term is a chain of
    MatMul+Tanh over the pixels, whose time grows with the resolution.
    """
    directory = store / FIXTURE
    directory.mkdir(parents=True)
    onnx_path = directory / "model.onnx"
    onnx.save(_fixture_graph(), onnx_path)
    (directory / "labels.txt").write_text("".join(f"class_{i}\n" for i in range(FIXTURE_CLASSES)))
    preprocess = json.loads((STORE / V1_SMALL / "manifest.json").read_text())["preprocess"]
    data = onnx_path.read_bytes()
    manifest = {
        "name": FIXTURE,
        "family": "fixture",
        "precision": "fp32",
        "native_resolution": FIXTURE_NATIVE,
        "resolutions": [FIXTURE_NATIVE, FIXTURE_SLOW],
        "tasks": ["classify"],
        "label_space": "fixture",
        "labels": "labels.txt",
        "num_classes": FIXTURE_CLASSES,
        "preprocess": preprocess,
        "onnx": "model.onnx",
        "file_size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return directory


def _fixture_graph() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    initializers = [
        numpy_helper.from_array((rng.standard_normal((_MIX_WIDTH, _MIX_WIDTH)) / 16).astype(np.float32), "mix"),
        numpy_helper.from_array(np.array([0, -1, _MIX_WIDTH], dtype=np.int64), "rows"),
        numpy_helper.from_array(rng.standard_normal((3, FIXTURE_CLASSES)).astype(np.float32), "head"),
        numpy_helper.from_array(np.tile(np.arange(FIXTURE_CLASSES, dtype=np.float32), (4, 1)), "table"),
    ]
    nodes = [helper.make_node("Reshape", ["image", "rows"], ["h0"])]
    for i in range(_MIX_LAYERS):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "mix"], [f"m{i}"]))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"h{i + 1}"]))
    nodes += [
        helper.make_node("ReduceMean", [f"h{_MIX_LAYERS}"], ["cost_3d"], axes=[1, 2], keepdims=1),
        helper.make_node("Flatten", ["cost_3d"], ["cost"], axis=1),
        helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["rgb"], axis=1),
        helper.make_node("MatMul", ["rgb", "head"], ["scores"]),
        helper.make_node("ReduceMax", ["image"], ["peak"], keepdims=0),
        helper.make_node("Cast", ["peak"], ["row"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "row"], ["bias"], axis=0),
        helper.make_node("Add", ["scores", "bias"], ["biased"]),
        helper.make_node("Add", ["biased", "cost"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        FIXTURE,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", FIXTURE_CLASSES])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model
