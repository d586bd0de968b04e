"""/metrics parsed with prometheus_client's parser: the fixed families, their types and labels."""

from __future__ import annotations

from pathlib import Path

import httpx
from harness import ServerProcess, running_server
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families
from support import DEEPLAB, TV_INT8, V1, V1_SMALL, image_bytes, metric_samples, metric_value

FAMILIES = {
    "mobilenet_requests": ("counter", {"endpoint", "model", "code"}),
    "mobilenet_request_duration_seconds": ("histogram", {"endpoint", "model"}),
    "mobilenet_preprocess_duration_seconds": ("histogram", {"model"}),
    "mobilenet_queue_wait_seconds": ("histogram", {"model"}),
    "mobilenet_inference_duration_seconds": ("histogram", {"model"}),
    "mobilenet_batch_size": ("histogram", {"model"}),
    "mobilenet_queue_depth": ("gauge", {"model"}),
    "mobilenet_model_loaded": ("gauge", {"model"}),
}


def classify_parrot(client: httpx.Client, model: str = V1) -> None:
    response = client.post(
        "/classify", params={"model": model}, content=image_bytes("parrot.jpg"), headers={"Content-Type": "image/jpeg"}
    )
    assert response.status_code == 200


def test_families_types_and_labels(client: httpx.Client) -> None:
    classify_parrot(client)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    for name, (kind, labels) in FAMILIES.items():
        assert name in families, name
        family = families[name]
        assert family.type == kind, (name, family.type)
        assert family.samples, name
        for sample in family.samples:
            assert labels <= set(sample.labels), (name, sample.labels)


def test_requests_counted_by_endpoint_model_code(client: httpx.Client) -> None:
    text = client.get("/metrics").text
    before_ok = metric_value(text, "mobilenet_requests_total", endpoint="/classify", model=V1, code="200")
    before_bad = metric_value(text, "mobilenet_requests_total", endpoint="/classify", model=V1, code="400")
    classify_parrot(client)
    client.post("/classify", params={"model": V1}, content=b"not an image", headers={"Content-Type": "image/jpeg"})
    text = client.get("/metrics").text
    assert metric_value(text, "mobilenet_requests_total", endpoint="/classify", model=V1, code="200") == before_ok + 1
    assert metric_value(text, "mobilenet_requests_total", endpoint="/classify", model=V1, code="400") == before_bad + 1


def test_one_inference_observation_per_run(client: httpx.Client) -> None:
    text = client.get("/metrics").text
    runs = metric_value(text, "mobilenet_inference_duration_seconds_count", model=V1)
    batches = metric_value(text, "mobilenet_batch_size_count", model=V1)
    waits = metric_value(text, "mobilenet_queue_wait_seconds_count", model=V1)
    preprocessed = metric_value(text, "mobilenet_preprocess_duration_seconds_count", model=V1)
    classify_parrot(client)
    text = client.get("/metrics").text
    assert metric_value(text, "mobilenet_inference_duration_seconds_count", model=V1) == runs + 1
    assert metric_value(text, "mobilenet_batch_size_count", model=V1) == batches + 1
    assert metric_value(text, "mobilenet_queue_wait_seconds_count", model=V1) == waits + 1
    assert metric_value(text, "mobilenet_preprocess_duration_seconds_count", model=V1) == preprocessed + 1
    assert metric_value(text, "mobilenet_request_duration_seconds_count", endpoint="/classify", model=V1) >= 1


def test_buckets_resolve_milliseconds(client: httpx.Client) -> None:
    text = client.get("/metrics").text
    bounds = {
        float(labels["le"])
        for family in text_string_to_metric_families(text)
        if family.name == "mobilenet_request_duration_seconds"
        for sample in family.samples
        if (labels := sample.labels).get("le") not in (None, "+Inf")
    }
    assert min(bounds) <= 0.001 and {0.005, 0.01, 0.05} <= bounds and max(bounds) >= 10


def test_model_loaded_and_queue_depth(client: httpx.Client) -> None:
    text = client.get("/metrics").text
    for model in (TV_INT8, V1, DEEPLAB):
        assert metric_value(text, "mobilenet_model_loaded", model=model) == 1
    # In the store but not served: no series, so that an alert on 0 sees only models that failed.
    assert "mobilenet_v1_0.5_160" not in {
        labels["model"] for labels, _ in metric_samples(text)["mobilenet_model_loaded"]
    }
    assert metric_value(text, "mobilenet_queue_depth", model=V1) == 0


def test_unknown_models_and_paths_do_not_mint_label_values(client: httpx.Client) -> None:
    client.post("/classify", params={"model": "attacker-chosen"}, content=b"x", headers={"Content-Type": "image/jpeg"})
    client.get("/some/random/path")
    text = client.get("/metrics").text
    assert "attacker-chosen" not in text and "/some/random/path" not in text
    assert metric_value(text, "mobilenet_requests_total", endpoint="unmatched", code="404") >= 1


def test_process_platform_and_gc_metrics_as_every_client_exposes_them(client: httpx.Client) -> None:
    families = {family.name: family for family in text_string_to_metric_families(client.get("/metrics").text)}
    for name, kind in {
        "process_resident_memory_bytes": "gauge",
        "process_cpu_seconds": "counter",
        "process_open_fds": "gauge",
        "process_max_fds": "gauge",
        "python_gc_objects_collected": "counter",
        "python_info": "gauge",
    }.items():
        assert name in families and families[name].type == kind, name
    assert families["process_resident_memory_bytes"].samples[0].value > 50 * 2**20  # a server with models loaded


def test_probes_scrapes_and_docs_stay_out_of_the_request_metrics(client: httpx.Client, server: ServerProcess) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready", "/openapi.json", "/docs"):
        assert client.get(path).status_code == 200, path
    text = client.get("/metrics").text
    endpoints = {labels["endpoint"] for labels, _ in metric_samples(text).get("mobilenet_requests_total", [])}
    assert endpoints and not endpoints & {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"}
    assert "/health/live" not in " ".join(endpoints)
    # Silent in the access log too, unless access_log_operational is set.
    log = server.log_text()
    assert "mobilenet_serve.access: GET /healthz" not in log and "mobilenet_serve.access: GET /metrics" not in log
    assert "mobilenet_serve.access: POST /classify" in log


def test_operators_can_have_probes_in_the_access_log(tmp_path: Path) -> None:
    config = {"models": [V1_SMALL], "default_model": V1_SMALL, "access_log_operational": True}
    with running_server(tmp_path, config) as process, process.client() as http:
        assert http.get("/healthz").status_code == 200
        text = http.get("/metrics").text
    assert "mobilenet_serve.access: GET /healthz model=- status=200" in process.log_text()
    assert 'endpoint="/healthz"' not in text


def test_openmetrics_when_the_scraper_asks_for_it(client: httpx.Client) -> None:
    classify_parrot(client)
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    response = client.get("/metrics", headers={"Accept": accept})
    assert response.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert response.text.endswith("# EOF\n")
    families = {f.name: f for f in openmetrics_families(response.text)}
    assert families["mobilenet_requests"].type == "counter" and families["mobilenet_requests"].samples
    plain = client.get("/metrics")
    assert plain.headers["content-type"].startswith("text/plain") and "# EOF" not in plain.text
