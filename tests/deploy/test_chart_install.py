"""Helm: strict lint, the values schema, what each value set renders, and bad values refused at install time."""

from __future__ import annotations

import json
from typing import Any

import helm_python as helm
import jsonschema
import pytest
import yaml
from chart import ALL_OPTIONS, CHART, NAMESPACE, VALUE_SETS, install, kinds, rendered


@pytest.mark.parametrize("value_set", ["defaults", "all-options"])
def test_helm_lint_strict_reports_nothing_above_info(value_set: str) -> None:
    report = helm.lint(CHART, VALUE_SETS[value_set], strict=True, namespace=NAMESPACE)
    problems = [message for message in report["messages"] if message["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


def test_values_schema_is_valid_json_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)


def test_default_values_render_the_core_objects_only() -> None:
    assert kinds(rendered("defaults")) == [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ]


def test_all_options_render_every_optional_object() -> None:
    assert kinds(rendered("all-options")) == [
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "Ingress",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "PrometheusRule",
        "ScaledObject",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]


def test_all_options_file_switches_every_option_on() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())

    def switches(values: dict[str, Any], path: str = "") -> list[str]:
        found = []
        for key, value in values.items():
            if key == "enabled":
                found.append(path)
            elif isinstance(value, dict):
                found += switches(value, f"{path}.{key}" if path else key)
        return found

    def lookup(values: dict[str, Any], path: str) -> Any:
        for key in path.split("."):
            values = values[key]
        return values

    assert switches(defaults)
    for path in switches(defaults):
        assert lookup(ALL_OPTIONS, path)["enabled"] is True, path
    assert set(ALL_OPTIONS) == set(defaults), "ci-values-all.yaml should set every top-level value"


# Each bad value, and the part of Helm's error that shows it was caught for
# the right reason.
BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "unknown top-level key": ({"replicas": 3}, "'replicas' not allowed"),
    "replicaCount not a number": ({"replicaCount": "two"}, "/replicaCount"),
    "api key in the ConfigMap": ({"config": {"api_key": "hunter2"}}, "'api_key' not allowed"),
    "store in the ConfigMap": ({"config": {"store": "/elsewhere"}}, "'store' not allowed"),
    "unknown config key": ({"config": {"max_batch": 8}}, "'max_batch' not allowed"),
    "batching override with a bad key": (
        {"config": {"batching": {"m": {"max_batch": 8}}}},
        "/config/batching/m",
    ),
    "pull policy": ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    "store source": ({"modelStore": {"source": "s3"}}, "/modelStore/source"),
    "PVC store without a claim": (
        {"modelStore": {"source": "persistentVolumeClaim"}},
        "/modelStore/persistentVolumeClaim/claimName",
    ),
    "init container store without an image": (
        {"modelStore": {"source": "initContainer"}},
        "/modelStore/initContainer/image/repository",
    ),
    "load metric provider": (
        {"autoscaling": {"loadMetric": {"provider": "hpa"}}},
        "/autoscaling/loadMetric/provider",
    ),
    "load metric": (
        {"autoscaling": {"loadMetric": {"metric": "gpu"}}},
        "/autoscaling/loadMetric/metric",
    ),
    "minReplicas above maxReplicas": (
        {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
        "minReplicas must not exceed",
    ),
    "CPU target above 100%": (
        {"autoscaling": {"targetCPUUtilizationPercentage": 150}},
        "/autoscaling/targetCPUUtilizationPercentage",
    ),
    "startup probe threshold": (
        {"probes": {"startup": {"failureThreshold": 0}}},
        "/probes/startup/failureThreshold",
    ),
    "ingress path type": (
        {
            "ingress": {
                "enabled": True,
                "hosts": [{"host": "a", "paths": [{"path": "/", "pathType": "Any"}]}],
            }
        },
        "/ingress/hosts/0/paths/0/pathType",
    ),
    "error ratio above 1": (
        {"monitoring": {"prometheusRule": {"errorRatio": 5}}},
        "/monitoring/prometheusRule/errorRatio",
    ),
    "scrape interval": (
        {"monitoring": {"serviceMonitor": {"interval": "often"}}},
        "/monitoring/serviceMonitor/interval",
    ),
    "CPU request missing": (
        {"resources": {"requests": {"cpu": None}}},
        "missing property 'cpu'",
    ),
}


@pytest.mark.parametrize(("values", "reason"), list(BAD_VALUES.values()), ids=list(BAD_VALUES))
def test_bad_values_fail_at_install_time(values: dict[str, Any], reason: str) -> None:
    with pytest.raises(helm.HelmError) as caught:
        install(values)
    assert reason in str(caught.value)
