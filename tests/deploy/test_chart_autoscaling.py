"""Autoscaling: CPU by default, a Prometheus Adapter metric the adapter serves, or KEDA instead of the HPA."""

from __future__ import annotations

import pytest
from chart import adapter_metric_names, kinds, one, rendered


def test_default_autoscaling_is_cpu_only() -> None:
    docs = rendered("defaults")
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(docs, "Deployment")["metadata"]["name"]
    assert [metric["resource"]["name"] for metric in hpa["spec"]["metrics"]] == ["cpu"]
    assert "replicas" not in one(docs, "Deployment")["spec"], "the HPA owns the replica count"
    assert "replicas" in one(rendered("autoscaling-off"), "Deployment")["spec"]


@pytest.mark.parametrize(
    "value_set", ["all-options-adapter-queue-depth", "all-options-adapter-request-rate"]
)
def test_prometheus_adapter_metric_is_one_the_adapter_serves(value_set: str) -> None:
    docs = rendered(value_set)
    assert "ScaledObject" not in kinds(docs)
    metrics = one(docs, "HorizontalPodAutoscaler")["spec"]["metrics"]
    pods_metrics = [
        metric["pods"]["metric"]["name"] for metric in metrics if metric["type"] == "Pods"
    ]
    assert len(pods_metrics) == 1 and pods_metrics[0] in adapter_metric_names()


@pytest.mark.parametrize("value_set", ["all-options", "all-options-keda-request-rate"])
def test_keda_replaces_the_hpa(value_set: str) -> None:
    docs = rendered(value_set)
    assert "HorizontalPodAutoscaler" not in kinds(docs), "two autoscalers would fight"
    scaled = one(docs, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == one(docs, "Deployment")["metadata"]["name"]
    assert {trigger["type"] for trigger in scaled["spec"]["triggers"]} == {"cpu", "prometheus"}
