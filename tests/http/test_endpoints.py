"""Every endpoint over real HTTP, with real images and the real model store."""

from __future__ import annotations

import io
import json

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from harness import ServerProcess
from PIL import Image
from support import (
    CAT_IDS,
    DEEPLAB,
    HOTDOG,
    IMAGES,
    MACAW,
    PASCAL_DOG,
    STORE,
    TV_FP32,
    TV_INT8,
    V1,
    content_type,
    cosine,
    image_bytes,
    top1,
)

from model_store.build.reference_preprocess import torchvision_reference

KNOWN = {"cat.png": CAT_IDS, "parrot.jpg": {MACAW}, "hot_dog.jpg": {HOTDOG}}


def post_image(client: httpx.Client, path: str, name: str, **params: object) -> httpx.Response:
    return client.post(path, params=params, content=image_bytes(name), headers={"Content-Type": content_type(name)})


def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


@pytest.mark.parametrize("model", [TV_FP32, TV_INT8, V1])
@pytest.mark.parametrize("name", sorted(KNOWN))
def test_classify_known_images(client: httpx.Client, model: str, name: str) -> None:
    response = post_image(client, "/classify", name, model=model)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == model and body["resolution"] == 224
    predictions = body["results"][0]["predictions"]
    assert len(predictions) == 5
    assert predictions[0]["class_id"] in KNOWN[name]
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True)
    assert 0 < sum(scores) <= 1.0 + 1e-6


def test_classify_default_model_and_labels(client: httpx.Client) -> None:
    body = post_image(client, "/classify", "parrot.jpg", top_k=1).json()
    assert body["model"] == TV_INT8
    assert body["results"][0]["predictions"][0]["label"] == "macaw"


def test_classify_scores_are_softmax_probabilities(client: httpx.Client) -> None:
    body = post_image(client, "/classify", "hot_dog.jpg", model=V1, top_k=1000).json()
    predictions = body["results"][0]["predictions"]
    assert len(predictions) == 1000
    assert sorted(p["class_id"] for p in predictions) == list(range(1000))
    assert sum(p["score"] for p in predictions) == pytest.approx(1.0, abs=1e-6)


def test_classify_matches_offline_reference(client: httpx.Client) -> None:
    """The service's preprocessing + ORT equals torchvision's transform + ORT (up to 1-LSB resize rounding)."""
    session = ort.InferenceSession(str(STORE / TV_FP32 / "model.onnx"), providers=["CPUExecutionProvider"])
    for name in ("cat.png", "grace_hopper.png", "pets.jpg"):
        logits = session.run(["logits"], {"image": torchvision_reference(IMAGES / name)[None]})[0][0]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        body = post_image(client, "/classify", name, model=TV_FP32, top_k=3).json()
        served = body["results"][0]["predictions"]
        assert [p["class_id"] for p in served] == list(np.argsort(-probs)[:3])
        for prediction in served:
            assert prediction["score"] == pytest.approx(float(probs[prediction["class_id"]]), abs=2e-3)


def test_multipart_several_images_in_order(client: httpx.Client) -> None:
    names = ["hot_dog.jpg", "cat.png", "parrot.jpg"]
    files = [("file", (name, image_bytes(name), content_type(name))) for name in names]
    response = client.post("/classify", params={"model": V1, "top_k": 2}, files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["results"]) == 3
    for index, name in enumerate(names):
        assert top1(body, index) in KNOWN[name]
        assert len(body["results"][index]["predictions"]) == 2


def test_classify_other_resolution(client: httpx.Client) -> None:
    body = post_image(client, "/classify", "parrot.jpg", model=TV_FP32, resolution=160).json()
    assert body["resolution"] == 160
    assert top1(body) == MACAW


def test_class_ids_shared_across_imagenet_variants(client: httpx.Client) -> None:
    ids = {model: top1(post_image(client, "/classify", "hot_dog.jpg", model=model).json()) for model in (TV_FP32, V1)}
    assert set(ids.values()) == {HOTDOG}


def test_embed_is_unit_length_by_default(client: httpx.Client) -> None:
    body = post_image(client, "/embed", "cat.png", model=TV_FP32).json()
    assert body["model"] == TV_FP32 and body["dim"] == 1280 and body["normalized"] is True
    vector = np.asarray(body["results"][0]["embedding"])
    assert vector.shape == (1280,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_embed_raw_matches_offline_reference(client: httpx.Client) -> None:
    session = ort.InferenceSession(str(STORE / TV_FP32 / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = session.run(["embedding"], {"image": torchvision_reference(IMAGES / "grace_hopper.png")[None]})[0][0]
    body = post_image(client, "/embed", "grace_hopper.png", model=TV_FP32, normalize="false").json()
    served = np.asarray(body["results"][0]["embedding"], dtype=np.float32)
    assert body["normalized"] is False
    assert np.linalg.norm(served) > 1.5
    assert cosine(served, expected) > 0.9999
    np.testing.assert_allclose(served, expected, rtol=0, atol=0.02)


def test_embed_v1_dimension(client: httpx.Client) -> None:
    assert post_image(client, "/embed", "owl.jpg", model=V1).json()["dim"] == 1024


def test_backbone_npz(client: httpx.Client) -> None:
    response = post_image(client, "/backbone", "cat.png", model=TV_INT8)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-npz"
    arrays = np.load(io.BytesIO(response.content))
    shapes = json.loads(response.headers["X-Feature-Shapes"])
    manifest = json.loads((STORE / TV_INT8 / "manifest.json").read_text())
    for stride in (8, 16, 32):
        array = arrays[f"s{stride}"]
        assert array.dtype == np.float32
        assert list(array.shape) == shapes[f"s{stride}"]
        assert array.shape == (manifest["feature_strides"][str(stride)], 224 // stride, 224 // stride)
        assert np.isfinite(array).all()


def test_backbone_several_images_stack(client: httpx.Client) -> None:
    files = [("file", (name, image_bytes(name), content_type(name))) for name in ("cat.png", "owl.jpg")]
    response = client.post("/backbone", params={"model": V1, "resolution": 160}, files=files)
    arrays = np.load(io.BytesIO(response.content))
    assert arrays["s8"].shape == (2, 256, 20, 20)
    assert arrays["s32"].shape == (2, 1024, 5, 5)
    assert json.loads(response.headers["X-Feature-Shapes"])["s16"] == [2, 512, 10, 10]
    single = np.load(io.BytesIO(post_image(client, "/backbone", "owl.jpg", model=V1, resolution=160).content))
    np.testing.assert_allclose(arrays["s16"][1], single["s16"], atol=1e-4)


def _dog_truth() -> np.ndarray:
    # Oxford-IIIT Pet trimap shifted to 0 = pet, 1 = background, 2 = border.
    return np.asarray(Image.open(IMAGES / "dog_segmentation_mask.png"))


def test_detect_finds_the_dog(client: httpx.Client) -> None:
    response = post_image(client, "/detect", "dog_segmentation.png")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == DEEPLAB
    result = body["results"][0]
    assert (result["width"], result["height"]) == (128, 128)
    dogs = [d for d in result["detections"] if d["class_id"] == PASCAL_DOG]
    assert dogs and dogs[0]["label"] == "dog" and dogs[0]["score"] > 0.5
    assert all(d["class_id"] != 0 for d in result["detections"])
    truth = _dog_truth() == 0
    ys, xs = np.nonzero(truth)
    expected = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert _box_iou(dogs[0]["box"], expected) > 0.7


def test_detect_boxes_are_in_original_pixels(client: httpx.Client) -> None:
    big = Image.open(IMAGES / "dog_segmentation.png").resize((384, 256), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    big.save(buffer, format="PNG")
    body = client.post("/detect", content=buffer.getvalue(), headers={"Content-Type": "image/png"}).json()
    result = body["results"][0]
    assert (result["width"], result["height"]) == (384, 256)
    dog = next(d for d in result["detections"] if d["class_id"] == PASCAL_DOG)
    x0, y0, x1, y1 = dog["box"]
    assert 0 <= x0 < x1 <= 384 and 0 <= y0 < y1 <= 256
    assert x1 - x0 > 150


def test_segment_png_at_original_size(client: httpx.Client) -> None:
    response = post_image(client, "/segment", "dog_segmentation.png")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    mask_image = Image.open(io.BytesIO(response.content))
    assert mask_image.size == (128, 128)
    mask = np.asarray(mask_image)
    assert set(np.unique(mask)) <= set(range(21))
    truth = _dog_truth()
    care = truth != 2
    predicted, actual = mask == PASCAL_DOG, truth == 0
    iou = ((predicted & actual) & care).sum() / ((predicted | actual) & care).sum()
    assert iou > 0.8


def _box_iou(a: list[int] | tuple[int, ...], b: list[int] | tuple[int, ...]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_models_listing(client: httpx.Client) -> None:
    body = client.get("/v1/models").json()
    by_name = {m["name"]: m for m in body["models"]}
    on_disk = {p.parent.name for p in STORE.glob("*/manifest.json")}
    assert on_disk <= set(by_name)
    for name in (TV_FP32, TV_INT8, V1, DEEPLAB):
        assert by_name[name]["loaded"] is True and by_name[name]["status"] == "loaded"
        assert by_name[name]["manifest"]["name"] == name
    not_loaded = on_disk - {TV_FP32, TV_INT8, V1, DEEPLAB}
    for name in not_loaded:
        assert by_name[name]["loaded"] is False
    assert body["default_model"] == TV_INT8
    assert body["default_segmentation_model"] == DEEPLAB
    assert "/classify" in by_name[TV_INT8]["default_for"]


def test_model_detail(client: httpx.Client) -> None:
    body = client.get(f"/v1/models/{V1}").json()
    assert body["name"] == V1 and body["loaded"] is True
    assert body["manifest"]["embedding_dim"] == 1024
    assert body["batching"]["max_batch_size"] == 8
    missing = client.get("/v1/models/nope")
    assert missing.status_code == 404
    assert V1 in missing.json()["error"]["available"]


def test_openapi_docs(client: httpx.Client) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    for path in ("/classify", "/embed", "/backbone", "/detect", "/segment", "/v1/models", "/healthz", "/readyz"):
        assert path in spec["paths"]
    assert "multipart/form-data" in spec["paths"]["/classify"]["post"]["requestBody"]["content"]
    assert "ClassifyResponse" in spec["components"]["schemas"]


def test_access_log_line(server: ServerProcess, client: httpx.Client) -> None:
    post_image(client, "/classify", "owl.jpg", model=V1)
    lines = [line for line in server.log_text().splitlines() if "mobilenet_serve.access" in line]
    assert any(
        "POST /classify" in line and f"model={V1}" in line and "status=200" in line and "latency_ms=" in line
        for line in lines
    )
    assert any("loaded 4 models" in line for line in server.log_text().splitlines())


def test_detect_min_area_drops_small_regions(client: httpx.Client) -> None:
    default = post_image(client, "/detect", "pets.jpg").json()["results"][0]["detections"]
    coarse = post_image(client, "/detect", "pets.jpg", min_area=0.02).json()["results"][0]["detections"]
    assert len(coarse) == 2 and all(d["label"] == "dog" for d in coarse)
    assert len(default) >= len(coarse)
    assert all(d["area"] >= 0.02 * 512 * 430 for d in coarse)
    assert all(d["area"] >= 0.001 * 512 * 430 for d in default)


def test_control_characters_in_a_path_cannot_forge_a_log_line(server: ServerProcess, client: httpx.Client) -> None:
    assert client.get("/nope%0A2026-01-01 00:00:00,000 INFO mobilenet_serve.access: GET /forged").status_code == 404
    log = server.log_once("GET /nope\\x0a2026-01-01", timeout=5)
    assert "GET /nope\\x0a2026-01-01" in log, "no escaped access-log line"
    assert not any(line.startswith("2026-01-01") for line in log.splitlines())
