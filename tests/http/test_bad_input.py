"""Bad input: a clear JSON error with the right status, never a 500, no effect on other requests."""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from harness import ServerProcess
from hostile_images import bmp_rle8, corrupt_png, jpeg_with_scans, png_with_chunks, tiff_with_strips
from PIL import Image
from support import DEEPLAB, HOTDOG, MACAW, TV_INT8, V1, encode, image_bytes, top1


def assert_error(response: httpx.Response, status: int, *fragments: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error["code"], str) and error["message"]
    for fragment in fragments:
        assert fragment.lower() in error["message"].lower(), error["message"]
    return error


def post(
    client: httpx.Client, data: bytes, content_type: str = "image/jpeg", path: str = "/classify", **params: object
) -> httpx.Response:
    return client.post(path, params=params, content=data, headers={"Content-Type": content_type})


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header and a tiny IDAT for an image of width x height: a decompression bomb."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def test_empty_body(client: httpx.Client) -> None:
    assert_error(post(client, b""), 400, "empty")


def test_not_an_image(client: httpx.Client) -> None:
    assert_error(post(client, b"hello, this is not an image at all" * 10), 400, "not a decodable image")


def test_truncated_jpeg(client: httpx.Client) -> None:
    data = image_bytes("parrot.jpg")
    assert_error(post(client, data[: len(data) // 3]), 400, "truncated")


def test_truncated_png(client: httpx.Client) -> None:
    data = image_bytes("cat.png")
    assert_error(post(client, data[: len(data) // 2], "image/png"), 400)


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "TGA"])
def test_unsupported_format(client: httpx.Client, fmt: str) -> None:
    data = encode(Image.new("RGB", (64, 64), (200, 10, 10)), fmt)
    assert_error(post(client, data, "application/octet-stream"), 415, fmt if fmt != "PPM" else "not supported")


def test_decompression_bomb(client: httpx.Client) -> None:
    error = assert_error(post(client, png_declaring(100_000, 100_000), "image/png"), 413, "over the limit")
    assert error["code"] == "image_too_large"


def test_image_over_pixel_limit_but_under_pillow_limit(client: httpx.Client) -> None:
    assert_error(post(client, png_declaring(8000, 5000), "image/png"), 413, "over the limit")


def test_body_over_limit(server: ServerProcess, client: httpx.Client) -> None:
    assert_error(post(client, b"\xff" * (server.config["max_body_bytes"] + 1)), 413, "exceeds")


def test_chunked_body_over_limit(server: ServerProcess, client: httpx.Client) -> None:
    def chunks():
        for _ in range(server.config["max_body_bytes"] // 65536 + 2):
            yield b"\0" * 65536

    response = client.post("/classify", content=chunks(), headers={"Content-Type": "image/jpeg"})
    assert_error(response, 413, "exceeds")


def test_unknown_model_lists_available(client: httpx.Client) -> None:
    error = assert_error(post(client, image_bytes("parrot.jpg"), model="resnet50"), 404, "resnet50")
    assert set(error["available"]) >= {TV_INT8, V1, DEEPLAB}


def test_store_variant_not_loaded_is_404(client: httpx.Client) -> None:
    assert_error(post(client, image_bytes("parrot.jpg"), model="mobilenet_v1_0.5_160"), 404, "not loaded")


@pytest.mark.parametrize("top_k", ["0", "1001", "-3", "many"])
def test_bad_top_k(client: httpx.Client, top_k: str) -> None:
    assert_error(post(client, image_bytes("parrot.jpg"), top_k=top_k), 422, "top_k")


@pytest.mark.parametrize("resolution", ["300", "0", "abc"])
def test_bad_resolution(client: httpx.Client, resolution: str) -> None:
    assert_error(post(client, image_bytes("parrot.jpg"), resolution=resolution), 422, "resolution")


def test_resolution_not_offered_names_the_choices(client: httpx.Client) -> None:
    assert_error(post(client, image_bytes("parrot.jpg"), model=V1, resolution=96), 422, "[128, 160, 192, 224]")


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", "application/x-www-form-urlencoded", ""])
def test_wrong_content_type(client: httpx.Client, content_type: str) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/classify", content=image_bytes("parrot.jpg"), headers=headers)
    assert_error(response, 415, "content-type")


def test_multipart_without_file_part(client: httpx.Client) -> None:
    response = client.post(
        "/classify", data={"image": "parrot"}, files={"photo": ("p.jpg", image_bytes("parrot.jpg"), "image/jpeg")}
    )
    assert_error(response, 400, "'file'")


def test_multipart_with_too_many_files(client: httpx.Client) -> None:
    files = [("file", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(40)]
    assert_error(client.post("/classify", files=files), 400)


def test_detect_on_a_classifier(client: httpx.Client) -> None:
    assert_error(post(client, image_bytes("parrot.jpg"), path="/detect", model=V1), 400, "does not support detect")


def test_classify_on_deeplab(client: httpx.Client) -> None:
    assert_error(post(client, image_bytes("parrot.jpg"), model=DEEPLAB), 400, "does not support classify")


def test_segment_takes_one_image(client: httpx.Client) -> None:
    files = [("file", ("a.png", image_bytes("dog_segmentation.png"), "image/png"))] * 2
    assert_error(client.post("/segment", files=files), 400, "exactly one image")


def test_unknown_route_and_method(client: httpx.Client) -> None:
    assert_error(client.get("/nope"), 404)
    assert_error(client.get("/classify"), 405)


def test_bad_image_in_multi_image_request_names_its_index(client: httpx.Client) -> None:
    files = [
        ("file", ("a.jpg", image_bytes("parrot.jpg"), "image/jpeg")),
        ("file", ("b.jpg", image_bytes("hot_dog.jpg"), "image/jpeg")),
        ("file", ("c.jpg", b"garbage bytes", "image/jpeg")),
    ]
    error = assert_error(client.post("/classify", files=files), 400, "image 2")
    assert error["index"] == 2


def test_bad_requests_do_not_disturb_good_ones(client: httpx.Client, server) -> None:
    """Bad images interleaved with good ones that would share their batches: the good ones are unaffected."""
    parrot, hot_dog = image_bytes("parrot.jpg"), image_bytes("hot_dog.jpg")
    truncated = parrot[: len(parrot) // 2]
    bad_multi = [("file", ("a.jpg", parrot, "image/jpeg")), ("file", ("b.jpg", truncated, "image/jpeg"))]

    def good(i: int) -> httpx.Response:
        with server.client() as http:
            return post(http, parrot if i % 2 else hot_dog, model=V1)

    def bad(i: int) -> httpx.Response:
        with server.client() as http:
            if i % 3 == 0:
                return http.post("/classify", params={"model": V1}, files=bad_multi)
            return post(http, truncated if i % 3 == 1 else b"\0" * 100, model=V1)

    with ThreadPoolExecutor(max_workers=12) as pool:
        goods = [pool.submit(good, i) for i in range(12)]
        bads = [pool.submit(bad, i) for i in range(12)]
        for i, future in enumerate(goods):
            response = future.result()
            assert response.status_code == 200, response.text
            assert top1(response.json()) == (MACAW if i % 2 else HOTDOG)
        for future in bads:
            assert future.result().status_code == 400
    assert client.get("/readyz").status_code == 200
    assert top1(post(client, parrot, model=V1).json()) == MACAW


@pytest.mark.parametrize(
    "build, content_type, status, fragment",
    [
        (lambda: jpeg_with_scans(2_000), "image/jpeg", 400, "scans"),
        (lambda: png_with_chunks(200_000), "image/png", 400, "chunks"),
        (lambda: bmp_rle8(4, 6320), "image/bmp", 415, "RLE8"),
        (lambda: tiff_with_strips(100_000), "image/tiff", 400, "strips"),
    ],
    ids=["jpeg-scans", "png-chunks", "bmp-rle", "tiff-strips"],
)
def test_images_built_to_decode_slowly_are_refused_at_once(
    client: httpx.Client, build: Callable[[], bytes], content_type: str, status: int, fragment: str
) -> None:
    started = time.perf_counter()
    assert_error(post(client, build(), content_type), status, fragment)
    assert time.perf_counter() - started < 2.0  # the refusal itself; decoding them took seconds


def test_a_png_corrupted_mid_stream_is_refused(client: httpx.Client) -> None:
    assert_error(post(client, corrupt_png(), "image/png"), 400, "corrupt")


def test_an_image_over_the_pixel_limit_is_refused_before_it_queues(server: ServerProcess) -> None:
    """Behind seconds of queued DeepLab work, an oversized image is refused at once, not after the queue."""
    honest = image_bytes("pets.jpg")
    with server.client() as http, ThreadPoolExecutor(24) as pool:
        busy = [pool.submit(post, http, honest, path="/detect") for _ in range(24)]
        time.sleep(0.3)
        started = time.perf_counter()
        refused = post(http, png_declaring(10_000, 5_000), "image/png", path="/detect")
        elapsed = time.perf_counter() - started
        finished_before = sum(f.done() for f in busy)
        assert all(f.result().status_code == 200 for f in busy)
    assert_error(refused, 413, "over the limit")
    assert finished_before < len(busy), "the queue had drained: nothing was measured"
    assert elapsed < 0.5, elapsed
