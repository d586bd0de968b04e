"""`mobilenet-serve import` of a torchvision MobileNetV2 checkpoint (.pth) with a replaced classifier.

The checkpoint is made here, without network, as a user's fine-tuning would leave it: torchvision's
state dict is recovered from the store's mobilenet_v2_1.0_224_tv graph (whose exporter folded each
BatchNorm into its convolution: the BatchNorm becomes the identity and carries the convolution's bias),
checked against that graph, and given the four-class head tests/finetune.py trains on committed photos
in place of `classifier[1]`. The imported entry is served by a real server with the torch module's own
scores. Bad checkpoints each get a message naming the file and what is wrong, and leave the store empty.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from finetune import FineTuned, fine_tune, write
from harness import ServerProcess, running_server
from onnx import numpy_helper
from support import REPO, STORE, TV_FP32, image_bytes, run_import
from torch import nn

from model_store.build.torchvision_v2 import MobileNetV2, MobileNetV2Outputs
from service.preprocess import prepare
from service.runtime import open_session
from service.store import parse_variant

NAME = "pets4_pth"
JPEG = {"content-type": "image/jpeg"}
OUTPUTS = ["logits", "embedding", "features_s8", "features_s16", "features_s32"]
# torch (unfused BatchNorm) against ONNX Runtime (folded): measured |dlogit| <= 2e-5 (test_torchvision_variants.py).
LOGIT_ATOL = 1e-3
SCORE_ATOL = 1e-4


def recovered_mobilenet_v2() -> MobileNetV2:
    """torchvision's ImageNet MobileNetV2 with the weights of the store's graph: its state dict, as from torchvision."""
    graph = onnx.load(str(STORE / TV_FP32 / "model.onnx")).graph
    weights = {init.name: torch.from_numpy(numpy_helper.to_array(init).copy()) for init in graph.initializer}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    net = MobileNetV2()
    modules = list(net.modules())
    # In forward order, every Conv2d is followed by its BatchNorm2d, and the exporter kept that order.
    pairs = [(conv, modules[i + 1]) for i, conv in enumerate(modules) if isinstance(conv, nn.Conv2d)]
    assert len(pairs) == len(convs) == 52 and all(isinstance(bn, nn.BatchNorm2d) for _, bn in pairs)
    with torch.no_grad():
        for (conv, bn), node in zip(pairs, convs):
            conv.weight.copy_(weights[node.input[1]])
            bn.weight.fill_(1.0)
            bn.bias.copy_(weights[node.input[2]])
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)  # so that it divides by sqrt(var + eps) = 1
        net.classifier[1].weight.copy_(weights["net.classifier.1.weight"])
        net.classifier[1].bias.copy_(weights["net.classifier.1.bias"])
    return net.eval()


def with_new_head(net: MobileNetV2, tuned: FineTuned) -> MobileNetV2:
    """`net.classifier[1] = nn.Linear(1280, 4)`, with the weights tests/finetune.py trained."""
    head = {
        init.name: numpy_helper.to_array(init) for init in onnx.load_from_string(tuned.onnx_bytes).graph.initializer
    }
    weight, bias = head["head_weight"], head["head_bias"]  # Gemm's [1280, 4]: x @ weight + bias
    net.classifier[1] = nn.Linear(weight.shape[0], weight.shape[1])
    with torch.no_grad():
        net.classifier[1].weight.copy_(torch.from_numpy(weight.T.copy()))
        net.classifier[1].bias.copy_(torch.from_numpy(bias.copy()))
    return net.eval()


def torch_softmax(net: MobileNetV2, jpegs: list[bytes]) -> np.ndarray:
    spec = parse_variant(STORE / TV_FP32).preprocess  # the torchvision preset the import writes
    batch = np.stack([prepare(jpeg, spec, 224, 40_000_000).tensor for jpeg in jpegs])
    with torch.no_grad():
        return torch.softmax(net(torch.from_numpy(batch)), dim=1).numpy()


@pytest.fixture(scope="module")
def tuned() -> FineTuned:
    return fine_tune()


@pytest.fixture(scope="module")
def recovered() -> MobileNetV2:
    return recovered_mobilenet_v2()


@pytest.fixture(scope="module")
def finetuned(recovered: MobileNetV2, tuned: FineTuned) -> MobileNetV2:
    net = MobileNetV2()
    net.load_state_dict(recovered.state_dict())
    return with_new_head(net, tuned)


@pytest.fixture(scope="module")
def checkpoint(finetuned: MobileNetV2, tuned: FineTuned, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The fine-tuned model's state dict, saved as a training script saves it, and its labels file."""
    sources = tmp_path_factory.mktemp("sources")
    _, labels = write(tuned, sources)
    path = sources / "finetuned_v2.pth"
    torch.save(finetuned.state_dict(), path)
    return path, labels


@pytest.fixture(scope="module")
def imported(checkpoint: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store with the entry imported from the checkpoint."""
    source, labels = checkpoint
    store = tmp_path_factory.mktemp("store")
    done = run_import(source, "--name", NAME, "--store", store, "--labels", labels, "--preprocess", "torchvision")
    assert done.returncode == 0, done.stderr
    assert "converting finetuned_v2.pth from a torchvision MobileNetV2 checkpoint..." in done.stderr  # progress
    assert "proving the entry on a real image" in done.stderr
    assert f"imported finetuned_v2.pth as {store / NAME}" in done.stdout
    assert "tasks: classify, embed, backbone; embedding: 1280" in done.stdout and "(native 224)" in done.stdout
    assert "converted from a torchvision MobileNetV2 checkpoint (width multiplier 1.0) with 4 classes" in done.stdout
    assert "Traceback" not in done.stderr
    return store


@pytest.fixture(scope="module")
def server(imported: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = {"models": [NAME], "default_model": NAME}
    with running_server(tmp_path_factory.mktemp("import-torch-server"), config, imported) as process:
        yield process


def test_the_recovered_checkpoint_computes_what_the_stores_graph_does(recovered: MobileNetV2) -> None:
    spec = parse_variant(STORE / TV_FP32).preprocess
    batch = np.stack([prepare(image_bytes(name), spec, 224, 40_000_000).tensor for name in ["cat.png", "owl.jpg"]])
    expected = open_session(STORE / TV_FP32 / "model.onnx", 1).run(OUTPUTS, {"image": batch})
    with torch.no_grad():
        actual = [t.numpy() for t in MobileNetV2Outputs(recovered)(torch.from_numpy(batch))]
    for name, ours, theirs in zip(OUTPUTS, actual, expected):
        assert ours.shape == theirs.shape, name
        np.testing.assert_allclose(ours, theirs, atol=LOGIT_ATOL, err_msg=name)


def test_the_entry_records_the_checkpoint_it_came_from(imported: Path, checkpoint: tuple[Path, Path]) -> None:
    variant = parse_variant(imported / NAME)
    manifest = variant.manifest
    assert variant.labels == ("cat", "parrot", "hot dog", "sunflower") and manifest["num_classes"] == 4
    assert manifest["family"] == "custom" and manifest["precision"] == "fp32"
    assert manifest["embedding_dim"] == 1280 and manifest["feature_strides"] == {"8": 32, "16": 96, "32": 1280}
    assert manifest["resolutions"] == [96, 128, 160, 192, 224, 256] and manifest["native_resolution"] == 224
    assert manifest["params"] == 1280 * 4 + 4 + 2_206_816  # torchvision's backbone (BatchNorm folded) and the head
    assert manifest["source"]["files"][0]["file"] == "finetuned_v2.pth"
    assert manifest["source"]["origin"].startswith("mobilenet-serve import of a torchvision MobileNetV2 checkpoint")
    assert sorted(p.name for p in imported.iterdir()) == [NAME]  # no work directory left behind


def test_the_server_classifies_held_out_crops_with_the_torch_modules_scores(
    tuned: FineTuned, finetuned: MobileNetV2, server: ServerProcess
) -> None:
    with server.client() as http:
        answers = [http.post("/classify?top_k=4", content=jpeg, headers=JPEG).json() for jpeg, _ in tuned.held_out]
    assert all(answer["model"] == NAME for answer in answers)
    predicted = [answer["results"][0]["predictions"][0]["label"] for answer in answers]
    assert predicted == [tuned.labels[index] for _, index in tuned.held_out]
    served = np.array(
        [[{p["class_id"]: p["score"] for p in a["results"][0]["predictions"]}[i] for i in range(4)] for a in answers]
    )
    np.testing.assert_allclose(served, torch_softmax(finetuned, [jpeg for jpeg, _ in tuned.held_out]), atol=SCORE_ATOL)


def test_a_wrapped_data_parallel_checkpoint_gives_the_same_entry(
    finetuned: MobileNetV2, imported: Path, tmp_path: Path
) -> None:
    wrapped = {"epoch": 7, "model": {f"module.{key}": value for key, value in finetuned.state_dict().items()}}
    source = tmp_path / "checkpoint_epoch7.pt"
    torch.save(wrapped, source)
    store = tmp_path / "store"
    store.mkdir()
    done = run_import(source, "--name", "wrapped", "--store", store)
    assert done.returncode == 0, done.stderr
    assert "classes: 4 (numbered)" in done.stdout
    assert parse_variant(store / "wrapped").manifest["sha256"] == parse_variant(imported / NAME).manifest["sha256"]


@pytest.mark.parametrize(
    ("width", "strides"),
    [(0.35, {"8": 16, "16": 32, "32": 1280}), (1.4, {"8": 48, "16": 136, "32": 1792})],
)
def test_the_width_multiplier_is_read_from_the_checkpoint(
    width: float, strides: dict[str, int], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    net = MobileNetV2(num_classes=10, width_mult=width).eval()
    source = tmp_path / f"mobilenet_v2_{width}.pth"
    torch.save(net.state_dict(), source)
    store = tmp_path / "store"
    store.mkdir()
    done = run_import(source, "--name", "w", "--store", store)
    assert done.returncode == 0, done.stderr
    assert f"(width multiplier {width}) with 10 classes" in done.stdout
    variant = parse_variant(store / "w")
    assert variant.manifest["feature_strides"] == strides and variant.manifest["embedding_dim"] == strides["32"]
    tensor = prepare(image_bytes("parrot.jpg"), variant.preprocess, 160, 40_000_000).tensor[None]
    ours = open_session(variant.onnx_path, 1).run(["logits"], {"image": tensor})[0]
    with torch.no_grad():
        theirs = net(torch.from_numpy(tensor)).numpy()
    np.testing.assert_allclose(ours, theirs, atol=LOGIT_ATOL)


def _small_other_net() -> dict[str, torch.Tensor]:
    other = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 30 * 30, 4))
    return other.state_dict()


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("another_net", "is not a torchvision MobileNetV2 checkpoint: missing features.0.0.weight, "),
        ("wrong_shape", "the layers' shapes are not those of torchvision's MobileNetV2 at width multiplier 1.0"),
        ("not_a_checkpoint", "is not a PyTorch checkpoint (RuntimeError: PytorchStreamReader failed reading zip"),
        ("not_a_pickle", "is not a PyTorch checkpoint ("),
        ("whole_model", "pickles objects other than tensors (torch.nn.modules.linear.Linear), which"),
        ("no_state_dict", "holds no state dict (a dict of tensors, or one under 'state_dict' or 'model') but a dict"),
        ("wrong_labels", "the labels file has 5 lines but the model's outputs are: logits (4 classes)"),
    ],
)
def test_a_bad_checkpoint_gets_a_message_naming_the_file_and_writes_nothing(
    case: str, words: str, checkpoint: tuple[Path, Path], finetuned: MobileNetV2, tmp_path: Path
) -> None:
    source = tmp_path / "model.pth"
    store = tmp_path / "store"
    store.mkdir()
    extra: list[str | Path] = []
    if case == "another_net":
        torch.save(_small_other_net(), source)
    elif case == "wrong_shape":
        state = finetuned.state_dict()
        state["features.0.0.weight"] = torch.zeros(24, 3, 3, 3)
        torch.save(state, source)
    elif case == "not_a_checkpoint":
        source.write_bytes(b"PK\x03\x04 not a zip of tensors" * 20)
    elif case == "not_a_pickle":
        source.write_text("epochs: 10\nlr: 0.01\n", encoding="utf-8")
    elif case == "whole_model":
        torch.save(nn.Linear(3, 2), source)
    elif case == "no_state_dict":
        torch.save({"epoch": 3, "best_accuracy": 0.9}, source)
    else:
        source = checkpoint[0]
        labels = tmp_path / "labels.txt"
        labels.write_text("a\nb\nc\nd\ne\n", encoding="utf-8")
        extra = ["--labels", labels]
    done = run_import(source, "--name", "x", "--store", store, *extra)
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert f"mobilenet-serve import: {source}" in done.stderr or case == "wrong_labels"
    if case == "another_net":
        assert "unexpected 0.weight, 0.bias, 1.weight, 1.bias, ... (" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(store.iterdir()) == []


def test_without_torch_it_says_how_to_install_the_extra(checkpoint: tuple[Path, Path], tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    # torch made unimportable in the child, as where the extra is not installed.
    blocked = "import sys; sys.modules['torch'] = None; from service.cli import main; main()"
    command = [sys.executable, "-c", blocked, "import", str(checkpoint[0]), "--name", "x", "--store", str(store)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "a PyTorch checkpoint needs torch, the `torch` extra: pip install 'mobilenet-serve[torch]'" in done.stderr
    assert "Traceback" not in done.stderr and list(store.iterdir()) == []
