"""A real Prometheus (Debian's package, which .ci/run installs) scrapes a real server and evaluates the chart's
alerts; the dashboard's queries then return data through Prometheus' HTTP API.

The scrape carries the labels the Prometheus Operator gives a ServiceMonitor's targets (namespace, job, pod),
so the dashboard's and the alerts' selectors match as they do in a cluster.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from chart import NAMESPACE, one, rendered
from harness import ServerProcess, free_port, running_server
from support import IMAGES, TV_INT8, V1_SMALL, require_tool
from test_alert_rules import INSTALL_HINT
from test_monitoring import dashboard

PROMETHEUS = shutil.which("prometheus")
SCRAPE_SECONDS = 1
RATE_WINDOW = "15s"
# Empty in a healthy run: no request has failed with a 5xx.
NEEDS_ERRORS = {"Error ratio (5xx) by model"}


def job() -> str:
    return str(one(rendered("all-options"), "Deployment")["metadata"]["name"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = {"models": [TV_INT8, V1_SMALL], "intra_op_threads": 1}
    with running_server(tmp_path_factory.mktemp("scraped"), config) as process:
        yield process


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, server: ServerProcess) -> Iterator[httpx.Client]:
    require_tool(PROMETHEUS, INSTALL_HINT)
    assert PROMETHEUS is not None
    folder = tmp_path_factory.mktemp("prometheus")
    groups = one(rendered("all-options"), "PrometheusRule")["spec"]["groups"]
    (folder / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    target = {"targets": [f"127.0.0.1:{server.port}"], "labels": {"namespace": NAMESPACE, "pod": "mobilenet-0"}}
    config = {
        "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "evaluation_interval": f"{SCRAPE_SECONDS}s"},
        "rule_files": [str(folder / "rules.yaml")],
        "scrape_configs": [{"job_name": job(), "static_configs": [target]}],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    command = [
        PROMETHEUS, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
    ]  # fmt: skip
    with (folder / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
        wait_for(lambda: client.get("/-/ready").status_code == 200, f"Prometheus ready ({folder / 'prometheus.log'})")
        yield client
    finally:
        client.close()
        process.terminate()
        process.wait(30)


def wait_for(condition: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def query(prometheus: httpx.Client, expr: str) -> list[dict[str, Any]]:
    answer = prometheus.get("/api/v1/query", params={"query": expr}).json()
    assert answer["status"] == "success", (expr, answer)
    return list(answer["data"]["result"])


def dashboard_queries() -> dict[str, str]:
    values = {"$namespace": NAMESPACE, "$job": job(), "$model": ".*", "$__rate_interval": RATE_WINDOW}
    queries = {}
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in values.items():
                expr = expr.replace(variable, value)
            queries[f"{panel['title']} ({target['refId']})"] = expr
    return queries


@pytest.fixture(scope="module")
def traffic(server: ServerProcess, prometheus: httpx.Client) -> None:
    """Requests spread over several scrapes, so that every rate has two samples in its window."""
    photo = (IMAGES / "parrot.jpg").read_bytes()
    with server.client(headers={"Content-Type": "image/jpeg"}) as client:
        for round_ in range(8):
            for model in (TV_INT8, V1_SMALL):
                assert client.post(f"/classify?model={model}", content=photo).status_code == 200
            assert client.post("/embed", content=photo).status_code == 200
            assert client.post("/classify?model=nope", content=photo).status_code == 404
            time.sleep(SCRAPE_SECONDS * 0.75 if round_ < 7 else SCRAPE_SECONDS * 3)


def test_prometheus_scrapes_the_server(prometheus: httpx.Client, traffic: None) -> None:
    targets = prometheus.get("/api/v1/targets").json()["data"]["activeTargets"]
    assert [(t["labels"]["job"], t["health"]) for t in targets] == [(job(), "up")], targets
    assert query(prometheus, f'up{{namespace="{NAMESPACE}", job="{job()}"}}')[0]["value"][1] == "1"


def test_the_dashboards_queries_return_data(prometheus: httpx.Client, traffic: None) -> None:
    empty = [name for name, expr in dashboard_queries().items() if not query(prometheus, expr)]
    assert sorted(empty) == sorted(n for n in dashboard_queries() if n.rsplit(" (", 1)[0] in NEEDS_ERRORS)
    by_model = query(prometheus, dashboard_queries()["Request rate by model (A)"])
    # The 404s for an unknown model carry no model label: a client must not mint series.
    assert {series["metric"].get("model") for series in by_model} == {TV_INT8, V1_SMALL, None}
    variables = prometheus.get("/api/v1/label/model/values", params={"match[]": "mobilenet_model_loaded"}).json()
    assert set(variables["data"]) == {TV_INT8, V1_SMALL}


def test_the_alerts_evaluate_cleanly_and_stay_quiet_on_a_healthy_server(
    prometheus: httpx.Client, traffic: None
) -> None:
    groups = prometheus.get("/api/v1/rules").json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {rule["name"] for rule in rules} >= {"MobilenetHighErrorRatio", "MobilenetThrottling", "MobilenetTargetDown"}
    assert [(rule["name"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"] == []
    assert [rule["name"] for rule in rules if rule["state"] != "inactive"] == []
