"""A genuinely fine-tuned MobileNet, built at test time as a user would bring one: a new head trained on four classes.

The store's torchvision MobileNetV2 computes embeddings of crops and flips of four committed photos
(cat, parrot, hot dog, sunflower); a linear softmax head is trained on them with numpy; and the head is
appended to the backbone's graph the way `torch.onnx.export` writes a classifier: input `pixel_values`
[1, 3, 224, 224], one output `probabilities` [1, 4] after a Softmax, and nothing else exposed. Held-out
crops (other positions and scales) are what the tests classify.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from support import STORE, TV_FP32, image_bytes

from service.preprocess import prepare
from service.runtime import open_session
from service.store import parse_variant

CLASSES = {"cat": "cat.png", "parrot": "parrot.jpg", "hot dog": "hot_dog.jpg", "sunflower": "sunflower.png"}
TRAIN_CROPS = 12
HELD_OUT_CROPS = 4


@dataclass(frozen=True)
class FineTuned:
    onnx_bytes: bytes
    labels: list[str]
    held_out: list[tuple[bytes, int]]  # JPEG, class index


def crops(name: str, count: int, seed: int) -> list[bytes]:
    """`count` JPEGs of random crops (60-95% of the side) of a photo, every other one flipped."""
    rng = np.random.default_rng(seed)
    image = Image.open(io.BytesIO(image_bytes(name))).convert("RGB")
    made = []
    for index in range(count):
        side = int(min(image.size) * rng.uniform(0.6, 0.95))
        x = int(rng.integers(0, image.size[0] - side + 1))
        y = int(rng.integers(0, image.size[1] - side + 1))
        crop = image.crop((x, y, x + side, y + side))
        if index % 2:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        buffer = io.BytesIO()
        crop.save(buffer, "JPEG", quality=90)
        made.append(buffer.getvalue())
    return made


def embeddings(jpegs: list[bytes]) -> np.ndarray:
    variant = parse_variant(STORE / TV_FP32)
    session = open_session(variant.onnx_path, 1)
    batch = np.stack([prepare(j, variant.preprocess, 224, 40_000_000).tensor for j in jpegs])
    return session.run(["embedding"], {"image": batch})[0]


def train_head(features: np.ndarray, targets: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax regression by gradient descent, on standardised features folded back into the weights."""
    mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-6
    x = (features - mean) / scale
    weights = np.zeros((x.shape[1], classes))
    bias = np.zeros(classes)
    onehot = np.eye(classes)[targets]
    for _ in range(300):
        logits = x @ weights + bias
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        grad = (probs - onehot) / len(x)
        weights -= 0.5 * (x.T @ grad + 1e-3 * weights)
        bias -= 0.5 * grad.sum(axis=0)
    folded = weights / scale[:, None]
    return folded.astype(np.float32), (bias - mean / scale @ weights).astype(np.float32)


def head_on_backbone(weights: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    """The store's V2 graph with its classifier replaced, exported as a user's model would be."""
    model = onnx.load(str(STORE / TV_FP32 / "model.onnx"))
    graph = model.graph
    nodes = [n for n in graph.node if "logits" not in n.output]
    renamed = []
    for node in nodes:
        node.input[:] = ["pixel_values" if name == "image" else name for name in node.input]
        renamed.append(node)
    renamed.append(helper.make_node("Gemm", ["embedding", "head_weight", "head_bias"], ["head_logits"]))
    renamed.append(helper.make_node("Softmax", ["head_logits"], ["probabilities"], axis=1))
    used = {name for node in renamed for name in node.input}
    initializers = [init for init in graph.initializer if init.name in used]
    initializers += [numpy_helper.from_array(weights, "head_weight"), numpy_helper.from_array(bias, "head_bias")]
    new_graph = helper.make_graph(
        renamed, "finetuned_v2",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, weights.shape[1]])],
        initializer=initializers,
    )  # fmt: skip
    tuned = helper.make_model(new_graph, opset_imports=model.opset_import, producer_name="pytorch")
    tuned.ir_version = model.ir_version
    onnx.checker.check_model(tuned)
    return tuned


def fine_tune(seed: int = 0) -> FineTuned:
    names = list(CLASSES.values())
    train = [(jpeg, index) for index, name in enumerate(names) for jpeg in crops(name, TRAIN_CROPS, seed)]
    held_out = [(jpeg, i) for i, name in enumerate(names) for jpeg in crops(name, HELD_OUT_CROPS, 1000 + seed)]
    features = embeddings([jpeg for jpeg, _ in train])
    weights, bias = train_head(features, np.array([index for _, index in train]), len(names))
    return FineTuned(head_on_backbone(weights, bias).SerializeToString(), list(CLASSES), held_out)


def write(tuned: FineTuned, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    model, labels = directory / "finetuned.onnx", directory / "labels.txt"
    model.write_bytes(tuned.onnx_bytes)
    labels.write_text("\n".join(tuned.labels) + "\n", encoding="utf-8")
    return model, labels
