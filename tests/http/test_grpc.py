"""The Open Inference Protocol over gRPC against the real server, driven by tritonclient.grpc and perf_analyzer.

The session's shared server serves gRPC on a port of its own: answers must equal REST's and V2 HTTP's
for the same images, errors must carry HTTP's messages with the matching gRPC status, and the calls
must be counted in the same request metrics. Servers of their own check the API keys and model
control, and that grpc_port 0 serves no gRPC.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc as grpc_module
import httpx
import numpy as np
import psutil
import pytest
import tritonclient.grpc as triton
import tritonclient.http as triton_http
from harness import ServerProcess, free_port, running_server, start_server
from support import DEEPLAB, STORE, TV_FP32, V1, V1_SMALL, image_bytes, metric_value, wait_until_all_arrived
from tritonclient.utils import InferenceServerException

from service.grpc.protocol import grpc_service_pb2 as pb
from service.grpc.protocol import grpc_service_pb2_grpc as pb_grpc
from service.preprocess import prepare
from service.store import parse_variant

IMAGES = ("parrot.jpg", "cat.png")
INFER = "/v2/models/{name}/infer"


def grpc_address(server: ServerProcess) -> str:
    return f"127.0.0.1:{server.config['grpc_port']}"


@pytest.fixture(scope="module")
def grpc(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(grpc_address(server)) as client:
        yield client


@pytest.fixture(scope="module")
def v2_http(server: ServerProcess) -> Iterator[triton_http.InferenceServerClient]:
    with triton_http.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=60.0) as client:
        yield client


def encoded(names: tuple[str, ...], module: object = triton) -> object:
    tensor = module.InferInput("image_bytes", [len(names), 1], "BYTES")  # type: ignore[attr-defined]
    tensor.set_data_from_numpy(np.array([image_bytes(n) for n in names], dtype=np.object_).reshape(-1, 1))
    return tensor


def preprocessed(names: tuple[str, ...], model: str = TV_FP32, resolution: int = 224) -> np.ndarray:
    spec = parse_variant(STORE / model).preprocess
    return np.stack([prepare(image_bytes(name), spec, resolution, 30_000_000).tensor for name in names])


def fp32(batch: np.ndarray, module: object = triton) -> object:
    tensor = module.InferInput("image", list(batch.shape), "FP32")  # type: ignore[attr-defined]
    tensor.set_data_from_numpy(batch)
    return tensor


def rest_probabilities(client: httpx.Client, name: str) -> np.ndarray:
    response = client.post(
        "/classify", params={"model": TV_FP32, "top_k": 1000}, files=[("file", (name, image_bytes(name)))]
    )
    assert response.status_code == 200, response.text
    scores = np.zeros(1000)
    for prediction in response.json()["results"][0]["predictions"]:
        scores[prediction["class_id"]] = prediction["score"]
    return scores


def test_health_and_server_metadata(grpc: triton.InferenceServerClient) -> None:
    assert grpc.is_server_live() and grpc.is_server_ready()
    metadata = grpc.get_server_metadata()
    assert metadata.name == "mobilenet-serve"
    assert {"binary_tensor_data", "classification", "model_configuration", "model_repository"} <= set(
        metadata.extensions
    )


def test_model_readiness(grpc: triton.InferenceServerClient) -> None:
    assert grpc.is_model_ready(TV_FP32) and grpc.is_model_ready(TV_FP32, model_version="1")
    assert not grpc.is_model_ready(TV_FP32, model_version="2")
    assert not grpc.is_model_ready("no_such_model")
    assert not grpc.is_model_ready(V1_SMALL)  # in the store, not served by this server


@pytest.mark.parametrize("model", [TV_FP32, DEEPLAB])
def test_metadata_and_config_equal_v2_http(
    grpc: triton.InferenceServerClient, v2_http: triton_http.InferenceServerClient, model: str
) -> None:
    over_grpc = grpc.get_model_metadata(model)
    over_http = v2_http.get_model_metadata(model)
    assert (over_grpc.name, list(over_grpc.versions), over_grpc.platform) == (
        over_http["name"], over_http["versions"], over_http["platform"]
    )  # fmt: skip
    for side in ("inputs", "outputs"):
        tensors = [(t.name, t.datatype, list(t.shape)) for t in getattr(over_grpc, side)]
        assert tensors == [(t["name"], t["datatype"], t["shape"]) for t in over_http[side]]
    config = grpc.get_model_config(model).config
    http_config = v2_http.get_model_config(model)
    assert config.max_batch_size == http_config["max_batch_size"] and config.platform == http_config["platform"]
    assert [(i.name, list(i.dims)) for i in config.input] == [(i["name"], i["dims"]) for i in http_config["input"]]
    assert list(config.dynamic_batching.preferred_batch_size) == http_config["dynamic_batching"]["preferred_batch_size"]


def test_encoded_images_equal_rest_and_v2_http(
    grpc: triton.InferenceServerClient, v2_http: triton_http.InferenceServerClient, client: httpx.Client
) -> None:
    names = ("probabilities", "embedding")
    result = grpc.infer(TV_FP32, [encoded(IMAGES)], outputs=[triton.InferRequestedOutput(n) for n in names])
    outputs = [triton_http.InferRequestedOutput(n, binary_data=True) for n in names]
    over_http = v2_http.infer(TV_FP32, [encoded(IMAGES, triton_http)], outputs=outputs)
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (2, 1000) and probabilities.dtype == np.float32
    for name in names:
        assert np.allclose(result.as_numpy(name), over_http.as_numpy(name), rtol=1e-4, atol=2e-5), name
    for index, image in enumerate(IMAGES):
        assert np.allclose(probabilities[index], rest_probabilities(client, image), atol=2e-5)


def test_preprocessed_fp32_input_equals_v2_http(
    grpc: triton.InferenceServerClient, v2_http: triton_http.InferenceServerClient
) -> None:
    batch = preprocessed(IMAGES)
    result = grpc.infer(TV_FP32, [fp32(batch)], request_id="r1")
    assert result.get_response().id == "r1" and result.get_response().model_version == "1"
    over_http = v2_http.infer(TV_FP32, [fp32(batch, triton_http)])
    assert np.allclose(result.as_numpy("logits"), over_http.as_numpy("logits"), rtol=1e-4, atol=1e-4)
    from_bytes = grpc.infer(TV_FP32, [encoded(IMAGES)])
    assert np.allclose(result.as_numpy("logits"), from_bytes.as_numpy("logits"), rtol=1e-4, atol=1e-4)


def test_classification_resolution_and_default_outputs(grpc: triton.InferenceServerClient) -> None:
    outputs = [triton.InferRequestedOutput("probabilities", class_count=3), triton.InferRequestedOutput("logits")]
    result = grpc.infer(TV_FP32, [encoded(IMAGES)], outputs=outputs)
    top = result.as_numpy("probabilities")
    assert top.shape == (2, 3)
    score, class_id, label = top[0][0].decode().split(":", 2)
    assert int(class_id) == 88 and label == "macaw" and 0.5 < float(score) <= 1.0
    features = grpc.infer(
        V1,
        [encoded(("owl.jpg",))],
        outputs=[triton.InferRequestedOutput("features_s32")],
        parameters={"resolution": 160},
    )
    assert features.as_numpy("features_s32").shape == (1, 1024, 5, 5)
    segmentation = grpc.infer(DEEPLAB, [encoded(("pets.jpg",))], parameters={"resolution": 257})
    assert [o.name for o in segmentation.get_response().outputs] == ["seg_logits"]
    assert segmentation.as_numpy("seg_logits").shape == (1, 21, 257, 257)


def http_error(server: ServerProcess, model: str, body: dict[str, object]) -> tuple[int, str]:
    response = httpx.post(server.url + INFER.format(name=model), json=body, timeout=60)
    return response.status_code, response.json()["error"]


def image_json(shape: list[int], datatype: str = "FP32") -> dict[str, object]:
    return {"name": "image", "shape": shape, "datatype": datatype, "data": [0] * int(np.prod(shape))}


ERRORS = [
    pytest.param("no_model", "image", "FP32", [1, 3, 96, 96], "StatusCode.NOT_FOUND", 404, id="unknown-model"),
    pytest.param(TV_FP32, "image", "INT32", [1, 3, 96, 96], "StatusCode.INVALID_ARGUMENT", 400, id="wrong-datatype"),
    pytest.param(TV_FP32, "image", "FP32", [1, 3, 100, 100], "StatusCode.INVALID_ARGUMENT", 400, id="wrong-shape"),
    pytest.param(TV_FP32, "pixels", "FP32", [1, 3, 96, 96], "StatusCode.INVALID_ARGUMENT", 400, id="unknown-input"),
    pytest.param(TV_FP32, "image", "NOPE", [1], "StatusCode.INVALID_ARGUMENT", 400, id="unknown-datatype"),
]


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    """The service's own stub, for what tritonclient will not send: typed contents, datatypes it does not know."""
    with grpc_module.insecure_channel(grpc_address(server)) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def typed_request(model: str, name: str, datatype: str, shape: list[int], values: np.ndarray) -> pb.ModelInferRequest:
    contents = pb.InferTensorContents()
    if datatype == "FP32":
        contents.fp32_contents.extend(values.ravel().tolist())
    elif datatype == "INT32":
        contents.int_contents.extend(values.ravel().astype(np.int32).tolist())
    tensor = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape, contents=contents)
    return pb.ModelInferRequest(model_name=model, inputs=[tensor])


@pytest.mark.parametrize(("model", "name", "datatype", "shape", "status", "http_status"), ERRORS)
def test_errors_carry_the_http_message_and_a_grpc_status(
    stub: pb_grpc.GRPCInferenceServiceStub, server: ServerProcess, model: str, name: str, datatype: str,
    shape: list[int], status: str, http_status: int,
) -> None:  # fmt: skip
    with pytest.raises(grpc_module.RpcError) as raised:
        stub.ModelInfer(typed_request(model, name, datatype, shape, np.zeros(shape, dtype=np.float32)), timeout=60)
    error = raised.value
    assert str(error.code()) == status  # type: ignore[attr-defined]
    expected = http_error(server, model, {"inputs": [image_json(shape, datatype) | {"name": name}]})
    assert (http_status, error.details()) == expected  # type: ignore[attr-defined]


def test_typed_contents_equal_raw_contents(
    stub: pb_grpc.GRPCInferenceServiceStub, grpc: triton.InferenceServerClient
) -> None:
    batch = preprocessed(("parrot.jpg",), resolution=128)
    reply = stub.ModelInfer(typed_request(TV_FP32, "image", "FP32", list(batch.shape), batch), timeout=60)
    typed = np.frombuffer(reply.raw_output_contents[0], dtype="<f4").reshape(list(reply.outputs[0].shape))
    assert np.allclose(typed, grpc.infer(TV_FP32, [fp32(batch)]).as_numpy("logits"), rtol=1e-5, atol=1e-5)
    elements = pb.InferTensorContents(bytes_contents=[image_bytes("parrot.jpg")])
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="image_bytes", datatype="BYTES", shape=[1, 1], contents=elements
    )
    reply = stub.ModelInfer(pb.ModelInferRequest(model_name=TV_FP32, inputs=[tensor]), timeout=60)
    logits = np.frombuffer(reply.raw_output_contents[0], dtype="<f4")
    assert logits.argmax() == 88


def test_a_request_over_the_body_limit_is_refused(grpc: triton.InferenceServerClient, server: ServerProcess) -> None:
    batch = np.zeros((8, 3, 224, 224), dtype=np.float32)  # 4.8 MB, over the shared server's 4 MiB
    assert batch.nbytes > server.config["max_body_bytes"]
    with pytest.raises(InferenceServerException) as raised:
        grpc.infer(TV_FP32, [fp32(batch)])
    assert raised.value.status() == "StatusCode.RESOURCE_EXHAUSTED"


def test_calls_are_counted_in_the_request_metrics(grpc: triton.InferenceServerClient, client: httpx.Client) -> None:
    def served() -> float:
        text = client.get("/metrics").text
        return metric_value(text, "mobilenet_requests_total", endpoint="grpc:ModelInfer", model=TV_FP32, code="200")

    before = served()
    grpc.infer(TV_FP32, [encoded(("parrot.jpg",))])
    assert served() == before + 1
    with pytest.raises(InferenceServerException):
        grpc.infer("no_model", [encoded(("parrot.jpg",))])
    text = client.get("/metrics").text
    # A name the server does not know never becomes a label value.
    assert metric_value(text, "mobilenet_requests_total", endpoint="grpc:ModelInfer", model="", code="404") >= 1
    assert 'model="no_model"' not in text


def test_keys_and_model_control(tmp_path: Path) -> None:
    key, admin = "grpc key", "admin key"
    config = {"models": [V1_SMALL], "intra_op_threads": 1, "calibration_seconds": 0, "grpc_port": free_port(),
              "api_key": key, "admin_api_key": admin, "model_control_mode": "explicit"}  # fmt: skip
    with running_server(tmp_path, config) as server, triton.InferenceServerClient(grpc_address(server)) as grpc:
        assert grpc.is_server_live() and grpc.is_server_ready()  # no key, as /v2/health/*
        with pytest.raises(InferenceServerException) as raised:
            grpc.get_model_metadata(V1_SMALL)
        assert raised.value.status() == "StatusCode.UNAUTHENTICATED" and "API key" in raised.value.message()
        assert grpc.get_model_metadata(V1_SMALL, headers={"x-api-key": key}).name == V1_SMALL
        bearer = {"authorization": f"Bearer {key}"}
        assert grpc.infer(V1_SMALL, [encoded(("parrot.jpg",))], headers=bearer).as_numpy("logits").shape == (1, 1000)
        with pytest.raises(InferenceServerException) as raised:
            grpc.get_model_repository_index(headers={"x-api-key": key})  # the inference key is not the admin key
        assert raised.value.status() == "StatusCode.UNAUTHENTICATED" and "admin" in raised.value.message()

        admin_headers = {"x-api-key": admin}
        states = {m.name: m.state for m in grpc.get_model_repository_index(headers=admin_headers).models}
        assert states[V1_SMALL] == "READY" and states[V1] == "UNAVAILABLE"
        grpc.load_model(V1, headers=admin_headers)
        assert grpc.is_model_ready(V1, headers=bearer)
        grpc.unload_model(V1_SMALL, headers=admin_headers)
        assert not grpc.is_model_ready(V1_SMALL, headers=bearer)
        ready = grpc.get_model_repository_index(headers=admin_headers).models
        assert {m.name for m in ready if m.state == "READY"} == {V1}
        with pytest.raises(InferenceServerException) as raised:
            grpc.load_model("no_such_entry", headers=admin_headers)
        assert raised.value.status() == "StatusCode.INVALID_ARGUMENT" and "no entry" in raised.value.message()


def test_grpc_port_zero_serves_no_grpc(tmp_path: Path) -> None:
    config = {"models": [V1_SMALL], "intra_op_threads": 1, "calibration_seconds": 0, "grpc_port": 0}
    with running_server(tmp_path, config) as server:
        listening = {
            c.laddr.port for c in psutil.Process(server.process.pid).net_connections("tcp") if c.status == "LISTEN"
        }
        assert listening == {server.port}
        assert "over gRPC" not in server.log_text()


def test_a_grpc_port_in_use_stops_the_start(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        config = {"models": [V1_SMALL], "calibration_seconds": 0, "grpc_port": taken.getsockname()[1]}
        server = start_server(tmp_path, config, wait_ready=False)
        try:
            assert server.process.wait(60) != 0
        finally:
            server.stop(signal.SIGKILL)
    assert "cannot serve gRPC on 127.0.0.1:" in server.log_text()


def test_perf_analyzer_over_grpc_measures_without_errors(
    perf_analyzer: list[str], server: ServerProcess, client: httpx.Client, tmp_path: Path
) -> None:
    jpeg = image_bytes("parrot.jpg")
    # perf_analyzer sends b64 content as the tensor's raw bytes: one length-prefixed BYTES element.
    raw = len(jpeg).to_bytes(4, "little") + jpeg
    input_data = tmp_path / "input.json"
    input_data.write_text(
        json.dumps({"data": [{"image_bytes": {"b64": base64.b64encode(raw).decode(), "shape": [1]}}]})
    )

    def served() -> float:
        text = client.get("/metrics").text
        return metric_value(text, "mobilenet_requests_total", endpoint="grpc:ModelInfer", model=V1, code="200")

    # A fixed request count bounds the run, as the HTTP test's does.
    command = [
        *perf_analyzer, "-m", V1, "-u", grpc_address(server), "-i", "grpc", "--input-data", str(input_data),
        "--concurrency-range", "2", "--request-count", "40",
    ]  # fmt: skip
    before = served()
    run = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    figures = [float(f) for f in re.findall(r"Throughput: ([0-9.]+) infer/sec", output)]
    assert figures and all(f > 0 for f in figures), output
    assert served() >= before + 40


def test_sigterm_drains_grpc_calls_in_flight(tmp_path: Path) -> None:
    batching = {"max_batch_size": 2, "max_queue_delay_ms": 0, "max_queue_size": 64, "timeout_ms": 120_000}
    config = {"models": [DEEPLAB], "intra_op_threads": 2, "calibration_seconds": 0, "grpc_port": free_port(),
              "shutdown_grace_seconds": 60, "batching": {DEEPLAB: batching}}  # fmt: skip
    server = start_server(tmp_path, config)
    in_flight = 8
    try:
        with triton.InferenceServerClient(grpc_address(server)) as grpc, ThreadPoolExecutor(in_flight) as pool:
            calls = [pool.submit(grpc.infer, DEEPLAB, [encoded(("cat_720p.jpg",))]) for _ in range(in_flight)]
            # DeepLab at 513 px takes well over 100 ms an image on two cores: once all have arrived, most are queued.
            wait_until_all_arrived(server.url, DEEPLAB, in_flight)
            server.process.send_signal(signal.SIGTERM)
            assert sum(call.done() for call in calls) < in_flight, "the calls should still be in flight"
            time.sleep(0.3)
            # Refused from SIGTERM on, as a new HTTP connection is, while the calls in flight go on.
            with triton.InferenceServerClient(grpc_address(server)) as late, pytest.raises(InferenceServerException):
                late.is_server_live(client_timeout=5)
            shapes = [call.result(timeout=120).as_numpy("seg_logits").shape for call in calls]
        assert shapes == [(1, 21, 513, 513)] * in_flight
        assert server.process.wait(60) in (0, -signal.SIGTERM)
        assert "shut down" in server.log_text()
    finally:
        server.stop(signal.SIGKILL)
