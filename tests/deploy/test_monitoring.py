"""Monitoring assets: alerts, the Grafana dashboard, KEDA and adapter queries, all valid PromQL over metrics the
service really exposes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
import yaml
from chart import ADAPTER_VALUES_FILE, ALL_OPTIONS, CHART, adapter_metric_names, one, rendered
from harness import REPO, running_server
from prometheus_client.parser import text_string_to_metric_families

DASHBOARD_FILE = CHART / "dashboards" / "mobilenet-serve.json"
RUNBOOK_FILE = REPO / "docs" / "runbook.md"
DEFAULT_RUNBOOK = yaml.safe_load((CHART / "values.yaml").read_text())["monitoring"]["prometheusRule"]["runbookUrl"]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text())


def promql_expressions() -> dict[str, str]:
    """Every PromQL query the chart, the dashboard and the adapter rules run."""
    queries: dict[str, str] = {}
    for value_set in ("all-options", "all-options-keda-request-rate"):
        docs = rendered(value_set)
        for group in one(docs, "PrometheusRule")["spec"]["groups"]:
            for rule in group["rules"]:
                queries[f"alert {rule['alert']}"] = rule["expr"]
        for trigger in one(docs, "ScaledObject")["spec"]["triggers"]:
            if trigger["type"] == "prometheus":
                queries[f"KEDA query ({value_set})"] = trigger["metadata"]["query"]
    board = dashboard()
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            # Grafana substitutes $__rate_interval before Prometheus sees the query.
            expr = target["expr"].replace("$__rate_interval", "5m")
            queries[f"panel {panel['title']!r} {target['refId']}"] = expr
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["query"]["query"])
            assert selector, variable["name"]
            queries[f"variable {variable['name']}"] = selector.group(1)
    for index, rule in enumerate(yaml.safe_load(ADAPTER_VALUES_FILE.read_text())["rules"]["custom"]):
        queries[f"adapter rule {index}"] = rule["seriesQuery"]
    return queries


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        return True

    promql_parser.walk(promql_parser.parse(expr), pre_visit=visit)
    return names


def test_every_query_is_valid_promql() -> None:
    queries = promql_expressions()
    assert len(queries) > 20
    for where, expr in queries.items():
        try:
            names = metric_names(expr)
        except Exception as error:  # promql-parser raises plain ValueError/RuntimeError
            pytest.fail(f"{where}: {error}\n{expr}")
        assert names, f"{where} reads no metric"


def test_alerts_cover_latency_errors_saturation_and_loading() -> None:
    rules = one(rendered("all-options"), "PrometheusRule")["spec"]["groups"][0]["rules"]
    used = {rule["alert"]: metric_names(rule["expr"]) for rule in rules}
    assert used == {
        "MobilenetHighLatencyP99": {"mobilenet_request_duration_seconds_bucket"},
        "MobilenetHighErrorRatio": {"mobilenet_requests_total"},
        "MobilenetThrottling": {"mobilenet_requests_total"},
        "MobilenetTargetDown": {"up"},
        "MobilenetQueueSaturated": {"mobilenet_queue_depth"},
        "MobilenetModelNotLoaded": {"mobilenet_model_loaded"},
        "MobilenetModelStoreChanged": {"mobilenet_model_store_intact"},
    }
    runbook = RUNBOOK_FILE.read_text()
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        # Each alert links to its own section of the runbook: GitHub's anchor of a heading `## Name`.
        base, anchor = rule["annotations"]["runbook_url"].split("#")
        assert base == ALL_OPTIONS["monitoring"]["prometheusRule"].get("runbookUrl", DEFAULT_RUNBOOK)
        assert anchor == rule["alert"].lower() and f"\n## {rule['alert']}\n" in runbook


def test_queue_saturation_alert_uses_each_models_own_queue_size() -> None:
    rules = one(rendered("all-options"), "PrometheusRule")["spec"]["groups"][0]["rules"]
    expr = next(rule["expr"] for rule in rules if rule["alert"] == "MobilenetQueueSaturated")
    batching = ALL_OPTIONS["config"]["batching"]
    for model, override in batching.items():
        if "max_queue_size" in override:
            assert f'model="{model}"}}) / {override["max_queue_size"]} >' in expr
            assert f'model!="{model}"' in expr
    assert f") / {ALL_OPTIONS['config']['default_batching']['max_queue_size']} >" in expr


def test_dashboard_is_well_formed_and_shipped_verbatim() -> None:
    board = dashboard()
    panel_ids = [panel["id"] for panel in board["panels"]]
    assert len(panel_ids) == len(set(panel_ids))
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for panel in board["panels"]:
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            for variable in re.findall(r"\$(\w+)", target["expr"]):
                assert variable in variables or variable.startswith("__"), panel["title"]
    # The per-model breakdown the issue asks for.
    titles = " ".join(panel["title"].lower() for panel in board["panels"])
    for topic in ("request rate", "latency percentiles", "batch size", "queue depth"):
        assert topic in titles, topic

    configmap = one(rendered("all-options"), "ConfigMap", name_suffix="-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["mobilenet-serve.json"]) == board


def test_adapter_rules_serve_the_charts_default_metric_names() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    chart_names = set(defaults["autoscaling"]["loadMetric"]["prometheusAdapter"].values())
    assert chart_names == adapter_metric_names()


def exposed_series(metrics_text: str) -> set[str]:
    """Every series name the exposition allows, from its # TYPE lines and samples.

    A labelled metric has no samples until its first observation, so names are
    derived from the family type as well.
    """
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "gauge": ("",),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in text_string_to_metric_families(metrics_text):
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def test_monitoring_assets_use_only_metrics_the_service_exposes(tmp_path: Path) -> None:
    # Every variant in the store with the default settings, as the chart deploys it; loading them all takes a while.
    with running_server(tmp_path, {}, timeout=300) as server:
        response = httpx.get(server.url + "/metrics", timeout=10)
        response.raise_for_status()
        # `up` is Prometheus' own series for every target it scrapes.
        exposed = exposed_series(response.text) | {"up"}

    unknown = {
        where: sorted(metric_names(expr) - exposed)
        for where, expr in promql_expressions().items()
        if metric_names(expr) - exposed
    }
    assert unknown == {}, f"metrics not exposed by the service: {unknown}"
