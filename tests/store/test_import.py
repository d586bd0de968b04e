"""`mobilenet-serve import`: a user's fine-tuned ONNX model becomes a store entry that a real server serves.

The model is trained here (tests/finetune.py): a new four-class head on the store's MobileNetV2,
exported as `torch.onnx.export` writes one. Bad sources each get a message naming what is wrong, and
leave the store as it was.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from finetune import FineTuned, crops, fine_tune, write
from harness import REPO, ServerProcess, running_server
from onnx import TensorProto, helper
from support import run_import

from service.preprocess import prepare
from service.runtime import open_session
from service.store import parse_variant, verify_onnx

NAME = "pets4"
JPEG = {"content-type": "image/jpeg"}


@pytest.fixture(scope="module")
def tuned() -> FineTuned:
    return fine_tune()


@pytest.fixture(scope="module")
def imported(tuned: FineTuned, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The store with the imported entry, and the source model."""
    sources = tmp_path_factory.mktemp("sources")
    model, labels = write(tuned, sources)
    store = tmp_path_factory.mktemp("store")
    done = run_import(model, "--name", NAME, "--store", store, "--labels", labels, "--preprocess", "torchvision")
    assert done.returncode == 0, done.stderr
    assert "proving the entry on a real image" in done.stderr  # progress
    assert f"imported {model.name} as {store / NAME}" in done.stdout  # summary
    assert "tasks: classify, embed, backbone" in done.stdout and "any batch size" in done.stdout
    return store, model


@pytest.fixture(scope="module")
def server(imported: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    store, _ = imported
    config = {"models": [NAME], "default_model": NAME}
    with running_server(tmp_path_factory.mktemp("import-server"), config, store) as process:
        yield process


def test_the_entry_has_a_manifest_the_server_reads_and_checksums_that_match(imported: tuple[Path, Path]) -> None:
    store, model = imported
    variant = parse_variant(store / NAME)
    verify_onnx(variant)
    manifest = variant.manifest
    assert manifest["family"] == "custom" and manifest["precision"] == "fp32" and manifest["num_classes"] == 4
    assert variant.labels == ("cat", "parrot", "hot dog", "sunflower")
    assert manifest["embedding_dim"] == 1280 and manifest["feature_strides"] == {"8": 32, "16": 96, "32": 1280}
    assert 224 in variant.resolutions and manifest["native_resolution"] == 224
    assert manifest["params"] > 2_000_000 and manifest["macs"] > 250_000_000
    assert manifest["source"]["files"][0]["file"] == model.name
    assert sorted(p.name for p in store.iterdir()) == [NAME]  # no work directory left behind


def test_the_server_classifies_held_out_images_of_the_new_classes(tuned: FineTuned, server: ServerProcess) -> None:
    with server.client() as http:
        answers = [http.post("/classify?top_k=1", content=jpeg, headers=JPEG).json() for jpeg, _ in tuned.held_out]
    predicted = [answer["results"][0]["predictions"][0]["label"] for answer in answers]
    expected = [tuned.labels[index] for _, index in tuned.held_out]
    assert all(answer["model"] == NAME for answer in answers)
    assert predicted == expected


def test_its_scores_are_the_source_models_own(
    tuned: FineTuned, imported: tuple[Path, Path], server: ServerProcess
) -> None:
    _, model = imported
    jpeg, _ = tuned.held_out[0]
    spec = parse_variant(imported[0] / NAME).preprocess
    tensor = prepare(jpeg, spec, 224, 40_000_000).tensor[None]
    reference = open_session(model, 1).run(["probabilities"], {"pixel_values": tensor})[0][0]
    with server.client() as http:
        answer = http.post("/classify?top_k=4", content=jpeg, headers=JPEG).json()
    scores = {p["class_id"]: p["score"] for p in answer["results"][0]["predictions"]}
    np.testing.assert_allclose([scores[i] for i in range(4)], reference, atol=1e-5)


def test_embed_and_backbone_come_from_the_graph_it_found(tuned: FineTuned, server: ServerProcess) -> None:
    jpeg, _ = tuned.held_out[0]
    with server.client() as http:
        embed = http.post("/embed", content=jpeg, headers=JPEG)
        backbone = http.post("/backbone?resolution=160", content=jpeg, headers=JPEG)
    assert embed.status_code == 200 and embed.json()["dim"] == 1280
    shapes = json.loads(backbone.headers["X-Feature-Shapes"])
    assert shapes == {"s8": [32, 20, 20], "s16": [96, 10, 10], "s32": [1280, 5, 5]}


def test_an_nhwc_model_is_served_as_nchw_with_the_same_scores(tuned: FineTuned, tmp_path: Path) -> None:
    model = onnx.load_from_string(tuned.onnx_bytes)
    graph = model.graph
    transpose = helper.make_node("Transpose", ["nhwc_pixels"], ["pixel_values"], perm=[0, 3, 1, 2])
    graph.node.insert(0, transpose)
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info("nhwc_pixels", TensorProto.FLOAT, [1, 224, 224, 3]))
    source = tmp_path / "nhwc.onnx"
    onnx.save_model(model, str(source))
    store = tmp_path / "store"
    store.mkdir()
    done = run_import(source, "--name", "nhwc", "--store", store, "--preprocess", "torchvision")
    assert done.returncode == 0, done.stderr
    assert "input: NHWC float, served as NCHW" in done.stdout and "classes: 4 (numbered)" in done.stdout
    variant = parse_variant(store / "nhwc")
    tensor = prepare(tuned.held_out[0][0], variant.preprocess, 224, 40_000_000).tensor[None]
    ours = open_session(variant.onnx_path, 1).run(["logits"], {"image": np.concatenate([tensor, tensor])})[0]
    theirs = open_session(source, 1).run(["probabilities"], {"nhwc_pixels": tensor.transpose(0, 2, 3, 1)})[0]
    softmax = np.exp(ours - ours.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(softmax, np.concatenate([theirs, theirs]), atol=1e-5)  # a batch of two too


def test_replace_swaps_the_entry_and_a_name_in_use_is_refused(tuned: FineTuned, tmp_path: Path) -> None:
    model, labels = write(tuned, tmp_path)
    store = tmp_path / "store"
    store.mkdir()
    assert run_import(model, "--name", "m", "--store", store, "--labels", labels).returncode == 0
    refused = run_import(model, "--name", "m", "--store", store)
    assert refused.returncode == 2 and "exists; pass --replace" in refused.stderr
    renamed = tmp_path / "renamed.txt"
    renamed.write_text("a\nb\nc\nd\n", encoding="utf-8")
    assert run_import(model, "--name", "m", "--store", store, "--labels", renamed, "--replace").returncode == 0
    assert parse_variant(store / "m").labels == ("a", "b", "c", "d")
    assert sorted(p.name for p in store.iterdir()) == ["m"]


def test_a_tflite_classifier_goes_through_the_stores_converter(tmp_path: Path) -> None:
    sources = REPO / "model_store" / "sources"
    store = tmp_path / "store"
    store.mkdir()
    labels = sources / "imagenet_labels.txt"  # 1001 lines: TF's background class first
    done = run_import(sources / "mobilenet_v1_0.25_128_quant.tflite", "--name", "tfl", "--store", store,
                      "--labels", labels, "--preprocess", "tf")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "converting mobilenet_v1_0.25_128_quant.tflite from TFLite" in done.stderr
    assert "(native 128)" in done.stdout and "int8" in done.stdout and "embed, backbone" in done.stdout
    variant = parse_variant(store / "tfl")
    tensor = prepare((REPO / "tests" / "data" / "images" / "parrot.jpg").read_bytes(), variant.preprocess, 128,
                     40_000_000).tensor[None]  # fmt: skip
    logits = open_session(variant.onnx_path, 1).run(["logits"], {"image": tensor})[0][0]
    assert variant.labels[int(logits.argmax())] == "macaw" and len(variant.labels) == 1001


def test_quantize_int8_calibrates_on_the_users_images_and_keeps_the_answers(tuned: FineTuned, tmp_path: Path) -> None:
    model, labels = write(tuned, tmp_path)
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    for index, jpeg in enumerate(crops("parrot.jpg", 4, 7) + crops("cat.png", 4, 7)):
        (calibration / f"{index}.jpg").write_bytes(jpeg)
    store = tmp_path / "store"
    store.mkdir()
    done = run_import(model, "--name", "q", "--store", store, "--labels", labels, "--quantize", "int8",
                      "--calibration", calibration)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "quantizing to int8, calibrated on 8 images" in done.stderr and "calibration images" in done.stdout
    variant = parse_variant(store / "q")
    assert variant.manifest["precision"] == "int8"
    session = open_session(variant.onnx_path, 1)
    batch = np.stack([prepare(jpeg, variant.preprocess, 224, 40_000_000).tensor for jpeg, _ in tuned.held_out])
    predicted = session.run(["logits"], {"image": batch})[0].argmax(axis=1)
    assert (predicted == [index for _, index in tuned.held_out]).sum() >= len(tuned.held_out) - 1


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--quantize", "int8"], "--quantize needs --calibration DIR"),
        (["--calibration", "."], "--calibration is for --quantize"),
        (["--quantize", "int8", "--calibration", "empty"], "has no images"),
    ],
)
def test_bad_quantize_options_are_refused(extra: list[str], words: str, tuned: FineTuned, tmp_path: Path) -> None:
    model, _ = write(tuned, tmp_path)
    (tmp_path / "empty").mkdir()
    store = tmp_path / "store"
    store.mkdir()
    options = [str(tmp_path / e) if e == "empty" else e for e in extra]
    done = run_import(model, "--name", "q", "--store", store, *options)
    assert done.returncode == 2 and words in done.stderr and list(store.iterdir()) == []


def test_an_int8_model_is_not_quantized_again(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    (calibration / "owl.jpg").write_bytes((REPO / "tests" / "data" / "images" / "owl.jpg").read_bytes())
    done = run_import(REPO / "model_store" / "sources" / "mobilenet_v1_0.25_128_quant.tflite", "--name", "q",
                      "--store", store, "--quantize", "int8", "--calibration", calibration)  # fmt: skip
    assert done.returncode == 2 and "is already int8" in done.stderr


def _model_with(node: onnx.NodeProto, input_dims: list[int]) -> bytes:
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )  # fmt: skip
    return helper.make_model(graph).SerializeToString()


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("not_a_model", "is not an ONNX model"),
        ("not_onnx_suffix", "only .onnx, .tflite and .pth/.pt models"),
        ("not_a_tflite", "is not a TFLite model"),
        ("custom_op", "operators ONNX Runtime does not have: my.ops::Sparkle"),
        ("no_image_input", "expected one float image input of 4 dimensions"),
        ("wrong_labels", "the labels file has 5 lines but the model's outputs are: head_logits (4 classes)"),
        ("store_is_a_file", "is not a directory"),
        ("unwritable_store", "is not writable"),
    ],
)
def test_a_bad_source_gets_a_message_naming_the_problem_and_writes_nothing(
    case: str, words: str, tuned: FineTuned, tmp_path: Path
) -> None:
    model, labels = write(tuned, tmp_path)
    store = tmp_path / "store"
    store.mkdir()
    args: list[str | Path] = [model, "--name", "x", "--store", store]
    if case == "not_a_model":
        model.write_bytes(b"\x89PNG not a graph at all" * 10)
    elif case == "not_onnx_suffix":
        args[0] = model.rename(tmp_path / "model.pb")
    elif case == "not_a_tflite":
        args[0] = tmp_path / "model.tflite"
        args[0].write_bytes(b"\x00\x01 not flatbuffers" * 7)
    elif case == "custom_op":
        model.write_bytes(_model_with(helper.make_node("Sparkle", ["x"], ["y"], domain="my.ops"), [1, 3, 8, 8]))
    elif case == "no_image_input":
        model.write_bytes(_model_with(helper.make_node("Relu", ["x"], ["y"]), [1, 10]))
    elif case == "wrong_labels":
        labels.write_text("a\nb\nc\nd\ne\n", encoding="utf-8")
        args += ["--labels", labels]
    elif case == "store_is_a_file":
        args[4] = labels
    else:
        args[4] = Path("/proc")  # not writable, even by root
    done = run_import(*args)
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert list(store.iterdir()) == []
