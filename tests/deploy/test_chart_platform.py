"""What a platform team asks of the chart: a NetworkPolicy, an Ingress that publishes only the API, a PodMonitor
option, extra volumes, Guaranteed QoS, and a `helm test` that classifies an image through a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from chart import ALL_OPTIONS, VALUE_SETS, deployment_pod, hooks, install, merged, one, rendered
from harness import running_server
from support import V1_SMALL

INTERNAL_PATHS = ["/metrics", "/healthz", "/readyz", "/", "/docs", "/openapi.json", "/v2/repository/index"]
API_PATHS = ["/classify", "/embed", "/detect", "/segment", "/v1/models", "/v2/models/x/infer", "/v2"]


def routed(paths: list[dict[str, str]], request_path: str) -> bool:
    """Whether an Ingress with these paths sends `request_path` to the Service (Kubernetes' matching rules)."""
    for entry in paths:
        path, kind = entry["path"], entry["pathType"]
        if kind == "Exact" and request_path == path:
            return True
        if kind == "Prefix" and (
            path == "/" or request_path == path or request_path.startswith(path.rstrip("/") + "/")
        ):
            return True
    return False


def test_the_default_ingress_publishes_the_api_and_nothing_internal() -> None:
    ingress = one(tuple(install({"ingress": {"enabled": True}})), "Ingress")
    paths = [path for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]
    assert [p for p in API_PATHS if not routed(paths, p)] == []
    assert [p for p in INTERNAL_PATHS if routed(paths, p)] == []


def test_the_network_policy_admits_the_configured_callers_and_the_scrapers_only() -> None:
    policy = one(rendered("all-options"), "NetworkPolicy")
    pod_labels = one(rendered("all-options"), "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    callers, scrapers = policy["spec"]["ingress"]
    assert callers["from"] == ALL_OPTIONS["networkPolicy"]["from"]
    assert scrapers["from"] == ALL_OPTIONS["networkPolicy"]["metricsFrom"]
    http = {"port": "http", "protocol": "TCP"}
    grpc = [{"port": "grpc", "protocol": "TCP"}] if ALL_OPTIONS["grpc"]["enabled"] else []
    assert callers["ports"] == [http, *grpc]
    assert scrapers["ports"] == [http]
    assert "NetworkPolicy" not in [doc["kind"] for doc in rendered("defaults")]


def test_a_pod_monitor_replaces_the_service_monitor_and_keeps_the_alerts_job_label() -> None:
    docs = rendered("all-options-pod-monitor")
    assert "ServiceMonitor" not in [doc["kind"] for doc in docs]
    endpoint = one(docs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]
    job = one(docs, "Deployment")["metadata"]["name"]
    monitor = ALL_OPTIONS["monitoring"]["serviceMonitor"]
    assert endpoint["relabelings"] == [{"targetLabel": "job", "replacement": job}, *monitor["relabelings"]]
    assert endpoint["metricRelabelings"] == monitor["metricRelabelings"]
    service_endpoint = one(rendered("all-options"), "ServiceMonitor")["spec"]["endpoints"][0]
    assert service_endpoint["relabelings"] == monitor["relabelings"]


def test_extra_volumes_are_mounted_beside_the_charts_own() -> None:
    pod = deployment_pod(rendered("all-options"))
    assert ALL_OPTIONS["extraVolumes"][0] in pod["volumes"]
    mounts = pod["containers"][0]["volumeMounts"]
    assert ALL_OPTIONS["extraVolumeMounts"][0] in mounts
    assert {"config", "tmp"} <= {mount["name"] for mount in mounts}


def test_guaranteed_qos_sets_requests_to_the_limits() -> None:
    resources = deployment_pod(rendered("all-options"))["containers"][0]["resources"]
    assert resources["requests"] == resources["limits"] == ALL_OPTIONS["resources"]["limits"]
    default = deployment_pod(rendered("defaults"))["containers"][0]["resources"]
    assert default["requests"] != default["limits"], "Burstable unless asked: memory may be requested below its limit"


@pytest.mark.parametrize("cpu", ["1500m", "0.5", "2.5"])
def test_guaranteed_qos_refuses_a_fraction_of_a_cpu(cpu: str) -> None:
    values = merged(VALUE_SETS["defaults"], {"qos": {"guaranteed": True}, "resources": {"limits": {"cpu": cpu}}})
    with pytest.raises(Exception, match="whole number of CPUs"):
        install(values)


def test_helm_test_classifies_an_image_through_a_real_server(tmp_path: Path) -> None:
    [pod] = hooks(ALL_OPTIONS)
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    assert container["image"] == deployment_pod(rendered("all-options"))["containers"][0]["image"]
    env = {entry["name"]: entry for entry in container["env"]}
    assert env["MOBILENET_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == ALL_OPTIONS["apiKey"]["existingSecret"]
    key = "helm-test-key"
    with running_server(tmp_path, {"models": [V1_SMALL], "api_key": key, "intra_op_threads": 1}) as server:
        ran = subprocess.run(
            [sys.executable, "-c", container["args"][0]],
            env={**os.environ, "TARGET": server.url, "MOBILENET_API_KEY": key},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.startswith(f"classified by {V1_SMALL} at 128:")
        refused = subprocess.run(
            [sys.executable, "-c", container["args"][0]],
            env={**os.environ, "TARGET": server.url, "MOBILENET_API_KEY": "wrong"},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert refused.returncode != 0 and "401" in refused.stderr
