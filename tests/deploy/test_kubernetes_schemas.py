"""Every rendered manifest of every value set against the Kubernetes OpenAPI schemas and the CRD schemas."""

from __future__ import annotations

import functools
import re
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from chart import CHART, VALUE_SETS, rendered
from cloudcoil.models.keda import v1alpha1 as keda_v1alpha1
from cloudcoil.models.prometheus_operator import v1 as monitoring_v1
from kubernetes_validate import utils as kubernetes_validate_utils

# Kinds that are not part of Kubernetes: validated against the CRD schemas.
CRD_MODELS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring_v1.ServiceMonitor,
    ("monitoring.coreos.com/v1", "PodMonitor"): monitoring_v1.PodMonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): monitoring_v1.PrometheusRule,
    ("keda.sh/v1alpha1", "ScaledObject"): keda_v1alpha1.ScaledObject,
}

STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)


def kube_versions() -> list[str]:
    """The oldest Kubernetes the chart supports and the newest with schemas here."""
    chart_yaml = yaml.safe_load((CHART / "Chart.yaml").read_text())
    oldest = re.match(r">=\s*(\d+\.\d+)", chart_yaml["kubeVersion"])
    assert oldest, chart_yaml["kubeVersion"]
    shipped = kubernetes_validate_utils.all_versions()
    assert any(version.startswith(oldest.group(1) + ".") for version in shipped), (
        f"kubernetes-validate no longer ships schemas for {oldest.group(1)}: raise kubeVersion"
    )
    return [oldest.group(1), kubernetes_validate_utils.latest_version()]


def closed(schema: Any) -> Any:
    """Reject unknown fields, as kubectl's strict field validation does."""
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for value in schema.values():
            closed(value)
    elif isinstance(schema, list):
        for value in schema:
            closed(value)
    return schema


@functools.cache
def crd_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    schema = CRD_MODELS[(api_version, kind)].model_json_schema(by_alias=True)
    return jsonschema.Draft202012Validator(closed(schema))


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_manifests_validate_against_kubernetes_and_crd_schemas(value_set: str) -> None:
    docs = rendered(value_set)
    assert docs
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        labels = doc["metadata"].get("labels", {})
        assert all(label in labels for label in STANDARD_LABELS), where
        key = (doc["apiVersion"], doc["kind"])
        if key in CRD_MODELS:
            errors = [
                f"{'.'.join(map(str, error.path))}: {error.message}"
                for error in crd_validator(*key).iter_errors(doc)
            ]
            assert errors == [], where
            CRD_MODELS[key].model_validate(doc)
            continue
        for version in kube_versions():
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(
                    f"{where} is invalid for Kubernetes {version}: "
                    f"{'.'.join(map(str, error.path))}: {error.message}"
                )
