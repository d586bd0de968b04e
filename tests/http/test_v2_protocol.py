"""The Open Inference Protocol (V2) against the real server, driven by Triton's own clients.

tritonclient checks metadata, readiness and inference with JSON and binary tensors, and its results
must equal the REST endpoints'; perf_analyzer runs a short bounded measurement without errors.
"""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient
from harness import ServerProcess
from PIL import Image
from pydantic import SecretStr
from support import DEEPLAB, STORE, TV_FP32, V1, V1_SMALL, encode, image_bytes, metric_value, wait_until_app_ready
from tritonclient.utils import InferenceServerException

from service.app import create_app
from service.config import Settings
from service.preprocess import prepare
from service.store import parse_variant

IMAGES = ("parrot.jpg", "cat.png")
INFER = "/v2/models/{name}/infer"


@pytest.fixture(scope="module")
def v2(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=60.0) as client:
        yield client


def preprocessed(names: tuple[str, ...], model: str = TV_FP32, resolution: int = 224) -> np.ndarray:
    """The [N, 3, S, S] tensor REST would build from these images, made with the server's own preprocessing."""
    spec = parse_variant(STORE / model).preprocess
    return np.stack([prepare(image_bytes(name), spec, resolution, 30_000_000).tensor for name in names])


def rest_probabilities(client: httpx.Client, name: str, model: str = TV_FP32, resolution: int = 224) -> np.ndarray:
    content_type = "image/png" if name.endswith(".png") else "image/jpeg"
    response = client.post(
        "/classify",
        params={"model": model, "top_k": 1000, "resolution": resolution},
        content=image_bytes(name),
        headers={"Content-Type": content_type},
    )
    assert response.status_code == 200, response.text
    scores = np.zeros(1000)
    for prediction in response.json()["results"][0]["predictions"]:
        scores[prediction["class_id"]] = prediction["score"]
    return scores


def rest_embedding(client: httpx.Client, name: str, model: str = TV_FP32, resolution: int = 224) -> np.ndarray:
    files = [("file", (name, image_bytes(name)))]
    response = client.post(
        "/embed", params={"model": model, "normalize": "false", "resolution": resolution}, files=files
    )
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["results"][0]["embedding"])


def encoded_input(names: tuple[str, ...], binary: bool) -> triton.InferInput:
    raw = [image_bytes(name) for name in names]
    # JSON cannot carry raw bytes: there the images travel as base64 strings.
    elements = raw if binary else [base64.b64encode(data) for data in raw]
    tensor = triton.InferInput("image_bytes", [len(names), 1], "BYTES")
    tensor.set_data_from_numpy(np.array(elements, dtype=np.object_).reshape(-1, 1), binary_data=binary)
    return tensor


def fp32_input(batch: np.ndarray, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput("image", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    return tensor


def test_health_and_server_metadata(v2: triton.InferenceServerClient) -> None:
    assert v2.is_server_live() and v2.is_server_ready()
    metadata = v2.get_server_metadata()
    assert metadata["name"] == "mobilenet-serve"
    assert {"binary_tensor_data", "classification", "model_configuration"} <= set(metadata["extensions"])


def test_model_readiness(v2: triton.InferenceServerClient) -> None:
    assert v2.is_model_ready(TV_FP32) and v2.is_model_ready(TV_FP32, model_version="1")
    assert not v2.is_model_ready(TV_FP32, model_version="2")
    assert not v2.is_model_ready("no_such_model")
    assert not v2.is_model_ready(V1_SMALL)  # in the store, not served by this server


def test_model_metadata_and_config(v2: triton.InferenceServerClient) -> None:
    metadata = v2.get_model_metadata(TV_FP32)
    assert metadata["name"] == TV_FP32 and metadata["versions"] == ["1"]
    inputs = {t["name"]: (t["datatype"], t["shape"]) for t in metadata["inputs"]}
    assert inputs == {"image": ("FP32", [-1, 3, -1, -1]), "image_bytes": ("BYTES", [-1, 1])}
    outputs = {t["name"]: t["shape"] for t in metadata["outputs"]}
    assert outputs == {
        "logits": [-1, 1000],
        "probabilities": [-1, 1000],
        "embedding": [-1, 1280],
        "features_s8": [-1, 32, -1, -1],
        "features_s16": [-1, 96, -1, -1],
        "features_s32": [-1, 1280, -1, -1],
    }
    deeplab = v2.get_model_metadata(DEEPLAB, model_version="1")
    assert [(t["name"], t["shape"]) for t in deeplab["outputs"]] == [("seg_logits", [-1, 21, -1, -1])]
    config = v2.get_model_config(TV_FP32)
    assert config["max_batch_size"] >= 1 and "dynamic_batching" in config
    assert {i["name"] for i in config["input"]} == {"image", "image_bytes"}


# JSON spells each float out: 128 keeps two images under the test server's 4 MiB body limit.
@pytest.mark.parametrize(("binary", "size"), [(False, 128), (True, 224)], ids=["json", "binary"])
def test_fp32_input_equals_rest(
    v2: triton.InferenceServerClient, client: httpx.Client, binary: bool, size: int
) -> None:
    outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("probabilities", "logits", "embedding")]
    batch = preprocessed(IMAGES, TV_FP32, size)
    result = v2.infer(TV_FP32, [fp32_input(batch, binary)], outputs=outputs, request_id="r1")
    response = result.get_response()
    assert response["model_name"] == TV_FP32 and response["model_version"] == "1" and response["id"] == "r1"
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (2, 1000) and probabilities.dtype == np.float32
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(result.as_numpy("logits").argmax(axis=1), probabilities.argmax(axis=1))
    for index, name in enumerate(IMAGES):
        assert np.allclose(probabilities[index], rest_probabilities(client, name, TV_FP32, size), atol=2e-5)
        rest = rest_embedding(client, name, TV_FP32, size)
        assert np.allclose(result.as_numpy("embedding")[index], rest, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("binary", [False, True], ids=["json-base64", "binary"])
def test_encoded_images_equal_rest(v2: triton.InferenceServerClient, client: httpx.Client, binary: bool) -> None:
    # Mixed on purpose: one output as binary data, the other as JSON, in one response.
    outputs = [
        triton.InferRequestedOutput("probabilities", binary_data=binary),
        triton.InferRequestedOutput("embedding", binary_data=not binary),
    ]
    result = v2.infer(TV_FP32, [encoded_input(IMAGES, binary)], outputs=outputs)
    for index, name in enumerate(IMAGES):
        assert np.allclose(result.as_numpy("probabilities")[index], rest_probabilities(client, name), atol=2e-5)
        assert np.allclose(result.as_numpy("embedding")[index], rest_embedding(client, name), rtol=1e-4, atol=1e-4)


def test_backbone_features_at_a_chosen_resolution(v2: triton.InferenceServerClient, client: httpx.Client) -> None:
    names = ("features_s8", "features_s16", "features_s32")
    outputs = [triton.InferRequestedOutput(name) for name in names]
    result = v2.infer(V1, [encoded_input(("owl.jpg",), True)], outputs=outputs, parameters={"resolution": 160})
    shapes = [result.as_numpy(name).shape for name in names]
    assert shapes == [(1, 256, 20, 20), (1, 512, 10, 10), (1, 1024, 5, 5)]
    rest = client.post(
        "/backbone", params={"model": V1, "resolution": 160}, files=[("file", ("o", image_bytes("owl.jpg")))]
    )
    assert rest.status_code == 200
    s32 = np.load(io.BytesIO(rest.content))["s32"]
    assert np.allclose(result.as_numpy("features_s32")[0], s32, atol=1e-4)
    same = v2.infer(V1, [fp32_input(preprocessed(("owl.jpg",), V1, 160), True)], outputs=outputs[2:])
    assert np.allclose(same.as_numpy("features_s32")[0], s32, atol=1e-4)


def test_default_outputs(v2: triton.InferenceServerClient, server: ServerProcess) -> None:
    binary = v2.infer(TV_FP32, [encoded_input(("parrot.jpg",), True)])
    assert [o["name"] for o in binary.get_response()["outputs"]] == ["logits"]
    assert binary.as_numpy("logits").shape == (1, 1000)
    segmentation = v2.infer(DEEPLAB, [encoded_input(("pets.jpg",), True)], parameters={"resolution": 257})
    assert segmentation.as_numpy("seg_logits").shape == (1, 21, 257, 257)
    body = {"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES", "data": [b64("parrot.jpg")]}]}
    plain = httpx.post(server.url + INFER.format(name=TV_FP32), json=body, timeout=60).json()
    assert [(o["name"], o["shape"], len(o["data"])) for o in plain["outputs"]] == [("logits", [1, 1000], 1000)]


def test_classification_extension(v2: triton.InferenceServerClient) -> None:
    outputs = [triton.InferRequestedOutput("probabilities", class_count=3), triton.InferRequestedOutput("logits")]
    result = v2.infer(TV_FP32, [encoded_input(IMAGES, True)], outputs=outputs)
    top = result.as_numpy("probabilities")
    assert top.shape == (2, 3)
    score, class_id, label = top[0][0].decode().split(":", 2)
    assert int(class_id) == 88 and label == "macaw" and 0.5 < float(score) <= 1.0
    assert [int(e.decode().split(":")[1]) for e in top[1]] == list(np.argsort(-result.as_numpy("logits")[1])[:3])


def test_compressed_request_and_response(v2: triton.InferenceServerClient) -> None:
    plain = v2.infer(TV_FP32, [encoded_input(("parrot.jpg",), True)])
    squeezed = v2.infer(
        TV_FP32,
        [encoded_input(("parrot.jpg",), True)],
        request_compression_algorithm="gzip",
        response_compression_algorithm="deflate",
    )
    assert np.array_equal(plain.as_numpy("logits"), squeezed.as_numpy("logits"))


def b64(name: str) -> str:
    return base64.b64encode(image_bytes(name)).decode()


def image_json(shape: list[int], datatype: str = "FP32", **extra: object) -> dict[str, object]:
    return {"name": "image", "shape": shape, "datatype": datatype, "data": [0.0] * int(np.prod(shape)), **extra}


def encoded_json(*elements: str) -> dict[str, object]:
    return {"name": "image_bytes", "shape": [len(elements)], "datatype": "BYTES", "data": list(elements)}


def infer_case(case_id: str, *inputs: dict[str, object], **request: object) -> object:
    """A request to a served model that the server must refuse with 400."""
    return pytest.param("POST", INFER.format(name=TV_FP32), {"inputs": list(inputs), **request}, 400, id=case_id)


ERROR_CASES = [
    pytest.param(
        "POST", INFER.format(name="no_model"), {"inputs": [image_json([1, 3, 96, 96])]}, 404, id="unknown-model"
    ),
    pytest.param("GET", "/v2/models/no_such_model", None, 404, id="unknown-model-metadata"),
    pytest.param("GET", f"/v2/models/{TV_FP32}/versions/7", None, 404, id="wrong-version"),
    pytest.param("GET", INFER.format(name=TV_FP32), None, 405, id="wrong-method"),
    pytest.param("GET", "/v2/no/such/route", None, 404, id="unknown-path"),
    infer_case("wrong-shape", image_json([1, 3, 100, 100])),
    infer_case("wrong-rank", image_json([3, 224, 224])),
    infer_case("wrong-datatype", image_json([1, 3, 96, 96], "INT32")),
    infer_case("bytes-as-fp32", {**image_json([1]), "name": "image_bytes"}),
    infer_case("too-few-values", {**image_json([1, 3, 96, 96]), "data": [1.0]}),
    infer_case("no-data", {"name": "image", "shape": [1, 3, 96, 96], "datatype": "FP32"}),
    infer_case("two-inputs", image_json([1, 3, 96, 96]), encoded_json(b64("parrot.jpg"))),
    infer_case("unknown-input", {**image_json([1]), "name": "pixels"}),
    infer_case("unknown-output", image_json([1, 3, 96, 96]), outputs=[{"name": "boxes"}]),
    infer_case("not-base64", encoded_json("\u00ff not base64")),
    infer_case("not-an-image", encoded_json(base64.b64encode(b"no image").decode())),
    infer_case("bad-resolution", encoded_json(b64("parrot.jpg")), parameters={"resolution": 100}),
    infer_case("bad-flag", image_json([1, 3, 96, 96]), parameters={"binary_data_output": "yes"}),
    infer_case("overflows-fp32", {**image_json([1, 3, 96, 96]), "data": [1e39] + [0.0] * (3 * 96 * 96 - 1)}),
    infer_case("null", {**image_json([1, 3, 96, 96]), "data": [None] + [0.0] * (3 * 96 * 96 - 1)}),
    infer_case("nested-deeper-than-the-shape", {**encoded_json(b64("parrot.jpg")), "data": [[[b64("parrot.jpg")]]]}),
    infer_case("too-many-elements", {**encoded_json(b64("parrot.jpg")), "data": [""] * 100_000}),
    infer_case("duplicate-output", image_json([1, 3, 96, 96]), outputs=[{"name": "logits"}, {"name": "logits"}]),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), ERROR_CASES)
def test_errors_use_the_protocol_body(
    server: ServerProcess, method: str, path: str, body: dict[str, object] | None, status: int
) -> None:
    response = httpx.request(method, server.url + path, json=body, timeout=60)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"} and isinstance(response.json()["error"], str)


def test_binary_framing_errors(server: ServerProcess) -> None:
    header = json.dumps(
        {"inputs": [{**image_json([1, 3, 96, 96]), "data": None, "parameters": {"binary_data_size": 8}}]}
    )
    url = server.url + INFER.format(name=TV_FP32)
    for extra, length in ((b"\0" * 4, len(header)), (b"\0" * 8, len(header) + 999), (b"\0" * 12, len(header))):
        response = httpx.post(
            url, content=header.encode() + extra, headers={"Inference-Header-Content-Length": str(length)}
        )
        assert response.status_code == 400 and set(response.json()) == {"error"}, response.text
    too_big = httpx.post(url, content=b"\0" * (5 * 1024 * 1024), timeout=60)
    assert too_big.status_code == 413 and set(too_big.json()) == {"error"}


def test_client_errors_are_raised_with_the_message(v2: triton.InferenceServerClient) -> None:
    bad = fp32_input(np.zeros((1, 3, 100, 100), dtype=np.float32), True)
    with pytest.raises(InferenceServerException) as raised:
        v2.infer(TV_FP32, [bad])
    assert raised.value.status() == "400" and "[N, 3, S, S]" in raised.value.message()
    with pytest.raises(InferenceServerException) as raised:
        v2.get_model_metadata("no_such_model")
    assert raised.value.status() == "404" and "no_such_model" in raised.value.message()


def test_v2_and_rest_share_runs_and_metrics(server: ServerProcess, client: httpx.Client) -> None:
    # Small images decode in a millisecond, so both requests' images are queued within the batching delay.
    small = [encode(Image.open(io.BytesIO(image_bytes(n))).convert("RGB").resize((64, 64)), "JPEG") for n in IMAGES * 3]
    v2_body = {"inputs": [encoded_json(*(base64.b64encode(data).decode() for data in small[:3]))]}
    files = [("file", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(small[3:])]
    barrier = threading.Barrier(2)

    def rest() -> None:
        barrier.wait()
        httpx.post(server.url + "/classify", params={"model": V1}, files=files, timeout=60)

    before = client.get("/metrics").text
    for _ in range(10):
        start = client.get("/metrics").text
        thread = threading.Thread(target=rest)
        thread.start()
        barrier.wait()
        assert httpx.post(server.url + INFER.format(name=V1), json=v2_body, timeout=60).status_code == 200
        thread.join()
        # Each request carries 3 images: a run of more than 4 holds images of both.
        if bigger_than_four(client.get("/metrics").text, V1) > bigger_than_four(start, V1):
            break
    else:
        pytest.fail("no ONNX Runtime run mixed V2 and REST images")
    after = client.get("/metrics").text
    assert metric_value(after, "mobilenet_requests_total", endpoint=INFER, model=V1, code="200") > metric_value(
        before, "mobilenet_requests_total", endpoint=INFER, model=V1, code="200"
    )


def bigger_than_four(metrics_text: str, model: str) -> float:
    count = metric_value(metrics_text, "mobilenet_batch_size_count", model=model)
    return count - metric_value(metrics_text, "mobilenet_batch_size_bucket", model=model, le="4.0")


def test_api_key_guards_v2_but_not_its_health_routes() -> None:
    key = "v2 key"
    settings = Settings(models=[V1_SMALL], default_model=V1_SMALL, api_key=SecretStr(key), intra_op_threads=1)
    with TestClient(create_app(settings)) as http:
        wait_until_app_ready(http, "/v2/health/ready")
        assert http.get("/v2/health/live").status_code == 200
        for path in ("/v2", f"/v2/models/{V1_SMALL}", f"/v2/models/{V1_SMALL}/ready"):
            refused = http.get(path)
            assert refused.status_code == 401 and set(refused.json()) == {"error"}
            assert http.get(path, headers={"X-API-Key": key}).status_code == 200
        assert http.get("/v1/models").json()["error"]["code"] == "unauthorized"  # REST keeps its own format


@pytest.mark.parametrize("input_kind", ["image", "image_bytes"])
def test_perf_analyzer_measures_without_errors(
    perf_analyzer: list[str], server: ServerProcess, tmp_path: Path, input_kind: str
) -> None:
    if input_kind == "image":
        rng = np.random.default_rng(0)
        values = rng.standard_normal(3 * 224 * 224).astype(np.float32).round(3).tolist()
        data = {"image": {"content": values, "shape": [3, 224, 224]}}
        concurrency = "2"
    else:
        jpeg = image_bytes("parrot.jpg")
        # perf_analyzer sends b64 content as the tensor's raw bytes: one length-prefixed BYTES element.
        raw = len(jpeg).to_bytes(4, "little") + jpeg
        data = {"image_bytes": {"b64": base64.b64encode(raw).decode(), "shape": [1]}}
        concurrency = "1"
    input_data = tmp_path / "input.json"
    input_data.write_text(json.dumps({"data": [data]}), encoding="utf-8")
    # A fixed request count bounds the run; stability windows could retry for long on a busy CI machine.
    command = [
        *perf_analyzer, "-m", V1, "-u", server.url.removeprefix("http://"), "-i", "http",
        "--input-data", str(input_data), "--concurrency-range", concurrency, "--request-count", "40",
    ]  # fmt: skip
    served_before = served_v2_requests(server)
    run = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    figures = [float(f) for f in re.findall(r"Throughput: ([0-9.]+) infer/sec", output)]
    assert figures and all(f > 0 for f in figures), output
    assert served_v2_requests(server) >= served_before + 40


def served_v2_requests(server: ServerProcess) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return metric_value(text, "mobilenet_requests_total", endpoint=INFER, model=V1, code="200")


def test_nonfinite_binary_fp32_is_refused(v2: triton.InferenceServerClient) -> None:
    batch = preprocessed(("parrot.jpg",), resolution=96)
    batch[0, 0, 0, 0] = np.inf
    with pytest.raises(InferenceServerException) as raised:
        v2.infer(TV_FP32, [fp32_input(batch, True)])
    assert raised.value.status() == "400" and "finite" in raised.value.message()


def test_millions_of_empty_binary_elements_are_refused_without_blocking_the_loop(server: ServerProcess) -> None:
    """20 MB of zero-length BYTES elements: counted only up to what the shape needs, in the codec pool."""
    raw = b"\0\0\0\0" * (3 * 1024 * 1024 // 4)
    parameters = {"binary_data_size": len(raw)}
    tensor = {"name": "image_bytes", "shape": [1, 1], "datatype": "BYTES", "parameters": parameters}
    header = json.dumps({"inputs": [tensor]}).encode()
    slowest = 0.0
    stop = threading.Event()

    def probe() -> None:
        nonlocal slowest
        with httpx.Client(base_url=server.url, timeout=10) as http:
            while not stop.is_set():
                started = time.perf_counter()
                http.get("/healthz")
                slowest = max(slowest, time.perf_counter() - started)
                time.sleep(0.01)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        response = httpx.post(
            server.url + INFER.format(name=TV_FP32),
            content=header + raw,
            headers={"Inference-Header-Content-Length": str(len(header))},
            timeout=60,
        )
    finally:
        stop.set()
        prober.join()
    assert response.status_code == 400 and "more than 1 elements" in response.json()["error"], response.text
    assert slowest < 0.5, slowest


def test_an_answer_over_the_response_limit_is_refused_before_it_is_serialised() -> None:
    settings = Settings(models=[V1_SMALL], default_model=V1_SMALL, intra_op_threads=1, max_response_bytes=100_000)
    body = {
        "inputs": [encoded_json(b64("parrot.jpg"), b64("cat.png"))],
        "outputs": [{"name": "features_s8"}, {"name": "logits"}],
    }
    with TestClient(create_app(settings)) as http:
        wait_until_app_ready(http)
        refused = http.post(INFER.format(name=V1_SMALL), json=body)
        assert refused.status_code == 400, refused.text
        assert "max_response_bytes" in refused.json()["error"]
        small = http.post(INFER.format(name=V1_SMALL), json={**body, "outputs": [{"name": "logits"}]})
        assert small.status_code == 200, small.text


def test_data_nested_a_thousand_deep_is_refused(server: ServerProcess) -> None:
    data = "[" * 1000 + '"eA=="' + "]" * 1000
    body = '{"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES", "data": %s}]}' % data
    response = httpx.post(server.url + INFER.format(name=TV_FP32), content=body, timeout=60)
    assert response.status_code == 400 and "nested deeper" in response.json()["error"], response.text
