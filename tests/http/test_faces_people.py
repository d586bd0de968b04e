"""/detect with the BlazeFace detectors and /segment with the selfie segmenter, over HTTP on a server of their own.

The faces are the committed photos' (face.jpg: two people; grace_hopper.png: one); photos without a face, tiny
and huge images and extreme aspect ratios must answer 200 with what is there, or an empty list.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from harness import ServerProcess, running_server
from PIL import Image
from support import (
    DATA,
    DEEPLAB_SMALL,
    FACE_FULL,
    FACE_SHORT,
    IMAGES,
    SELFIE,
    encode,
    image_bytes,
    metric_value,
    runs_larger_than_one,
)

MODELS = [FACE_SHORT, FACE_FULL, SELFIE, DEEPLAB_SMALL]
KEYPOINTS = ["right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion"]


@pytest.fixture(scope="module")
def faces_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = {"models": MODELS, "intra_op_threads": 2, "max_image_pixels": 30_000_000, "calibration_seconds": 0}
    with running_server(tmp_path_factory.mktemp("faces"), config) as process:
        yield process


@pytest.fixture()
def http(faces_server: ServerProcess) -> Iterator[httpx.Client]:
    with faces_server.client() as client:
        yield client


def post(http: httpx.Client, path: str, data: bytes, **params: object) -> httpx.Response:
    return http.post(path, params=params, content=data, headers={"Content-Type": "application/octet-stream"})


def faces(http: httpx.Client, data: bytes, **params: object) -> dict:
    response = post(http, "/detect", data, **params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["method"] == "ssd"
    return body["results"][0]


def iou(a: list[float], b: list[float]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize(
    ("model", "photo", "count"),
    [(FACE_SHORT, "face.jpg", 2), (FACE_SHORT, "grace_hopper.png", 1), (FACE_FULL, "grace_hopper.png", 1)],
)
def test_faces_with_boxes_scores_and_keypoints(http: httpx.Client, model: str, photo: str, count: int) -> None:
    result = faces(http, image_bytes(photo), model=model)
    width, height = Image.open(IMAGES / photo).size
    assert (result["width"], result["height"]) == (width, height)
    found = result["detections"]
    assert len(found) == count
    assert [d["score"] for d in found] == sorted((d["score"] for d in found), reverse=True)
    for detection in found:
        assert detection["label"] == "face" and detection["score"] >= 0.5
        x0, y0, x1, y1 = detection["box"]
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert [k["name"] for k in detection["keypoints"]] == KEYPOINTS
        eyes_nose_mouth = detection["keypoints"][:4]
        assert all(x0 <= k["x"] <= x1 and y0 <= k["y"] <= y1 for k in eyes_nose_mouth)
        right_eye, left_eye = detection["keypoints"][:2]
        # The person's right eye is on the left of the photo.
        assert right_eye["x"] < left_eye["x"]


def test_grace_hoppers_face_is_where_her_face_is(http: httpx.Client) -> None:
    """A box measured by eye on the 512x600 photo: her face spans about x 190-360, y 140-350."""
    box = faces(http, image_bytes("grace_hopper.png"), model=FACE_SHORT)["detections"][0]["box"]
    assert iou(box, [190, 140, 360, 350]) > 0.6, box


@pytest.mark.parametrize("photo", ["parrot.jpg", "cat.png", "kite_and_cold.jpg"])
def test_no_face_is_an_empty_list(http: httpx.Client, photo: str) -> None:
    assert faces(http, image_bytes(photo), model=FACE_SHORT)["detections"] == []


@pytest.mark.parametrize("size", [(1, 1), (3, 3000), (3000, 3), (16, 9), (6000, 200), (200, 6000)])
def test_tiny_huge_and_extreme_images_answer(http: httpx.Client, size: tuple[int, int]) -> None:
    data = encode(Image.new("RGB", size, (128, 120, 110)), "PNG")
    for model in (FACE_SHORT, FACE_FULL):
        result = faces(http, data, model=model)
        assert (result["width"], result["height"]) == size
        assert result["detections"] == []


def _face_crop() -> tuple[Image.Image, list[float]]:
    """Grace Hopper's face and a margin, and the face's box in that crop."""
    photo = Image.open(IMAGES / "grace_hopper.png").convert("RGB")
    return photo.crop((150, 100, 400, 390)), [40.0, 40.0, 210.0, 250.0]


@pytest.mark.parametrize(("canvas", "offset"), [((750, 290), (500, 0)), ((250, 870), (0, 580)), ((1000, 290), (0, 0))])
def test_letterbox_maps_boxes_back_at_extreme_aspect_ratios(
    http: httpx.Client, canvas: tuple[int, int], offset: tuple[int, int]
) -> None:
    """The same face at the far end of a wide or tall image: its box moves with it, through the letterbox."""
    crop, _ = _face_crop()
    alone = faces(http, encode(crop, "PNG"), model=FACE_SHORT)["detections"]
    assert len(alone) == 1
    image = Image.new("RGB", canvas, (90, 90, 90))
    image.paste(crop, offset)
    found = faces(http, encode(image, "PNG"), model=FACE_SHORT)["detections"]
    assert len(found) == 1
    expected = [alone[0]["box"][0] + offset[0], alone[0]["box"][1] + offset[1]]
    expected += [alone[0]["box"][2] + offset[0], alone[0]["box"][3] + offset[1]]
    assert iou(found[0]["box"], expected) >= 0.85, (found[0]["box"], expected)
    # A third of the pixels: the keypoints move by up to a tenth of the face's width.
    nose, tolerance = found[0]["keypoints"][2], 0.1 * (expected[2] - expected[0])
    assert abs(nose["x"] - (alone[0]["keypoints"][2]["x"] + offset[0])) < tolerance
    assert abs(nose["y"] - (alone[0]["keypoints"][2]["y"] + offset[1])) < tolerance


def test_a_large_image_is_letterboxed_like_its_small_copy(http: httpx.Client) -> None:
    """4.6 M pixels at 4:1, decoded before it queues (large_images.py): the boxes of its copy at a quarter of the
    size, scaled up, since both fill the same letterbox."""
    crop, _ = _face_crop()
    large = Image.new("RGB", (4200, 1100), (90, 90, 90))
    large.paste(crop.resize((948, 1100), Image.Resampling.BICUBIC), (3000, 0))
    small = large.resize((1050, 275), Image.Resampling.BOX)
    found = faces(http, encode(large, "PNG"), model=FACE_SHORT)
    reference = faces(http, encode(small, "PNG"), model=FACE_SHORT)["detections"]
    assert (found["width"], found["height"]) == (4200, 1100)
    assert len(found["detections"]) == len(reference) == 1
    box = found["detections"][0]["box"]
    assert box[0] > 2900, "the face is at the right end"
    assert iou(box, [4 * v for v in reference[0]["box"]]) >= 0.9


def test_several_images_batch_and_keep_their_order(http: httpx.Client) -> None:
    names = ["face.jpg", "parrot.jpg", "grace_hopper.png"]
    files = [("file", (name, image_bytes(name))) for name in names]
    response = http.post("/detect", params={"model": FACE_SHORT}, files=files)
    assert response.status_code == 200, response.text
    together = response.json()["results"]
    assert [len(r["detections"]) for r in together] == [2, 0, 1]
    for name, result in zip(names, together, strict=True):
        assert result == faces(http, image_bytes(name), model=FACE_SHORT)


def test_min_score_keeps_more_or_fewer_faces(http: httpx.Client) -> None:
    data = image_bytes("face.jpg")
    default = faces(http, data, model=FACE_FULL)["detections"]
    strict = faces(http, data, model=FACE_FULL, min_score=0.9)["detections"]
    loose = faces(http, data, model=FACE_FULL, min_score=0.3)["detections"]
    assert len(strict) < len(default) <= len(loose)
    assert all(d["score"] >= 0.9 for d in strict)


def test_deeplab_detect_says_its_method(http: httpx.Client) -> None:
    response = post(http, "/detect", image_bytes("pets.jpg"), model=DEEPLAB_SMALL)
    assert response.status_code == 200
    assert response.json()["method"] == "mask_regions"


def test_person_mask_at_the_original_size(http: httpx.Client) -> None:
    response = post(http, "/segment", image_bytes("face.jpg"), model=SELFIE)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-mask"] == "person"
    mask = Image.open(io.BytesIO(response.content))
    assert mask.mode == "P" and mask.size == Image.open(IMAGES / "face.jpg").size
    values = np.asarray(mask)
    assert set(np.unique(values)) == {0, 1}
    assert 0.2 < values.mean() < 0.9  # two people fill much of the photo, not all of it


def test_matte_is_the_probability_and_agrees_with_the_mask(http: httpx.Client) -> None:
    data = image_bytes("kite_and_cold.jpg")
    mask = np.asarray(Image.open(io.BytesIO(post(http, "/segment", data, model=SELFIE).content)))
    response = post(http, "/segment", data, model=SELFIE, matte="true")
    assert response.headers["x-mask"] == "matte"
    matte = Image.open(io.BytesIO(response.content))
    assert matte.mode == "L" and matte.size == (1352, 900)
    alpha = np.asarray(matte)
    assert alpha.min() < 10 and alpha.max() > 245
    assert ((alpha > 127) == (mask == 1)).mean() >= 0.999


@pytest.mark.parametrize(
    ("path", "params", "status", "fragment"),
    [
        ("/detect", {"model": DEEPLAB_SMALL, "min_score": 0.5}, 422, "min_score"),
        ("/detect", {"model": FACE_SHORT, "min_area": 0.01}, 422, "min_area"),
        ("/segment", {"model": DEEPLAB_SMALL, "matte": "true"}, 422, "matte"),
        ("/segment", {"model": FACE_SHORT}, 400, "does not support segment"),
        ("/detect", {"model": SELFIE}, 400, "does not support detect"),
        ("/detect", {"model": FACE_SHORT, "min_score": 1.5}, 422, ""),
    ],
)
def test_parameters_of_the_other_method_are_refused(
    http: httpx.Client, path: str, params: dict, status: int, fragment: str
) -> None:
    response = post(http, path, image_bytes("face.jpg"), **params)
    assert response.status_code == status, response.text
    assert fragment in response.text


def test_models_list_names_the_new_defaults(http: httpx.Client) -> None:
    body = http.get("/v1/models").json()
    assert body["default_face_detection_model"] == FACE_SHORT
    assert body["default_person_segmentation_model"] == SELFIE
    default_for = {m["name"]: m["default_for"] for m in body["models"] if m["loaded"]}
    # /detect and /segment without a model stay DeepLab's.
    assert default_for[DEEPLAB_SMALL] == ["/detect", "/segment"]
    assert default_for[FACE_SHORT] == [] and default_for[SELFIE] == []


GOLDEN = json.loads((DATA / "golden" / "mediapipe.json").read_text())
GOLDEN_MASKS = DATA / "golden" / "mediapipe_masks.npz"


def golden_image(name: str) -> bytes:
    """A committed photo, or the golden file's composite (a crop pasted onto a plain canvas) rebuilt from its recipe."""
    recipe = GOLDEN["images"][name].get("recipe")
    if recipe is None:
        return image_bytes(name)
    canvas = Image.new("RGB", tuple(recipe["canvas"]), tuple(recipe["fill"]))
    canvas.paste(
        Image.open(IMAGES / recipe["photo"]).convert("RGB").crop(tuple(recipe["crop"])), tuple(recipe["offset"])
    )
    return encode(canvas, "PNG")


@pytest.mark.parametrize("model", [FACE_SHORT, FACE_FULL])
@pytest.mark.parametrize("photo", sorted(GOLDEN["images"]))
def test_boxes_agree_with_mediapipe(http: httpx.Client, model: str, photo: str) -> None:
    """MediaPipe 0.10.21's own face_detection solution (model_store/build/mediapipe_goldens.py): the same faces,
    each box at IoU 0.9 or more (0.97 at least on these photos, 0.998 typically), scores within 0.01; the
    composites put a face at the far end of 3:1 and 1:3.5 images, through the letterbox."""
    theirs = GOLDEN["images"][photo][model]
    ours = faces(http, golden_image(photo), model=model)["detections"]
    assert len(ours) == len(theirs)
    for face in theirs:
        best = max(ours, key=lambda d: iou(d["box"], face["box"]))
        assert iou(best["box"], face["box"]) >= 0.9, (best["box"], face["box"])
        assert abs(best["score"] - face["score"]) < 0.01
        side = face["box"][2] - face["box"][0]
        mine = np.array([[k["x"], k["y"]] for k in best["keypoints"]])
        assert np.abs(mine - np.array(face["keypoints"])).max() < 0.05 * side


@pytest.mark.parametrize("photo", sorted(GOLDEN["images"]))
def test_person_masks_agree_with_mediapipe(http: httpx.Client, photo: str) -> None:
    """MediaPipe's selfie_segmentation solution's mask, thresholded at 0.5 as ours: at least 99.85% of pixels
    agree on these images; the matte is within a few 8-bit steps of its probability almost everywhere."""
    theirs = np.load(GOLDEN_MASKS)[photo]
    data = golden_image(photo)
    mask = np.asarray(Image.open(io.BytesIO(post(http, "/segment", data, model=SELFIE).content)))
    assert mask.shape == theirs.shape
    assert ((mask == 1) == (theirs > 127)).mean() >= 0.99
    matte = np.asarray(Image.open(io.BytesIO(post(http, "/segment", data, model=SELFIE, matte="true").content)))
    assert (np.abs(matte.astype(int) - theirs.astype(int)) <= 8).mean() >= 0.99


def _v2_infer(http: httpx.Client, model: str, photo: str, outputs: list[str] | None = None) -> dict:
    body: dict = {
        "inputs": [
            {
                "name": "image_bytes",
                "datatype": "BYTES",
                "shape": [1, 1],
                "data": [base64.b64encode(image_bytes(photo)).decode()],
            }
        ]
    }
    if outputs is not None:
        body["outputs"] = [{"name": name} for name in outputs]
    response = http.post(f"/v2/models/{model}/infer", json=body)
    assert response.status_code == 200, response.text
    return {o["name"]: o for o in response.json()["outputs"]}


def test_v2_serves_the_raw_tensors(http: httpx.Client) -> None:
    """The V2 protocol gives what the REST answers decode: the detector's regressors and scores, the probability."""
    metadata = http.get(f"/v2/models/{FACE_SHORT}").json()
    assert {o["name"]: o["shape"] for o in metadata["outputs"]} == {
        "regressors": [-1, 896, 16],
        "classificators": [-1, 896, 1],
    }
    raw = _v2_infer(http, FACE_SHORT, "grace_hopper.png")
    assert raw["regressors"]["shape"] == [1, 896, 16] and raw["classificators"]["shape"] == [1, 896, 1]
    # One anchor's logit above 0 at least: a face's sigmoid score is over 0.5.
    assert max(raw["classificators"]["data"]) > 0
    person = _v2_infer(http, SELFIE, "face.jpg", ["person_probability"])["person_probability"]
    assert person["shape"] == [1, 1, 256, 256]
    assert 0.0 <= min(person["data"]) and max(person["data"]) <= 1.0


def test_concurrent_requests_share_runs_and_are_counted(http: httpx.Client, faces_server: ServerProcess) -> None:
    data = image_bytes("face.jpg")

    def one(_: int) -> int:
        with faces_server.client() as client:
            return post(client, "/detect", data, model=FACE_SHORT).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(one, range(48)))
    assert statuses == [200] * 48
    metrics = http.get("/metrics").text
    assert metric_value(metrics, "mobilenet_requests_total", endpoint="/detect", model=FACE_SHORT, code="200") >= 48
    assert runs_larger_than_one(metrics, FACE_SHORT) > 0


def test_without_deeplab_detect_and_segment_default_to_the_mediapipe_models(tmp_path) -> None:
    config = {"models": [FACE_SHORT, SELFIE], "intra_op_threads": 2, "calibration_seconds": 0}
    with running_server(tmp_path, config) as server, server.client() as client:
        detected = post(client, "/detect", image_bytes("grace_hopper.png"))
        assert detected.status_code == 200, detected.text
        assert (detected.json()["model"], detected.json()["method"]) == (FACE_SHORT, "ssd")
        segmented = post(client, "/segment", image_bytes("face.jpg"))
        assert segmented.status_code == 200 and segmented.headers["x-model"] == SELFIE
        listed = {m["name"]: m["default_for"] for m in client.get("/v1/models").json()["models"] if m["loaded"]}
        assert listed == {FACE_SHORT: ["/detect"], SELFIE: ["/segment"]}
