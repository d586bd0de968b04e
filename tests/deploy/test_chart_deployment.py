"""What the rendered Deployment promises: hardened pods, probes, graceful termination, its config file, spread."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from chart import VALUE_SETS, deployment_pod, install, one, rendered, service_config
from support import REPO


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


@pytest.mark.parametrize("value_set", ["defaults", "all-options"])
def test_grpc_port_on_the_container_and_the_service(value_set: str) -> None:
    docs = rendered(value_set)
    grpc = VALUE_SETS[value_set].get("grpc", {}).get("port", 8001)
    server = next(c for c in deployment_pod(docs)["containers"] if c["name"] == "server")
    assert {"name": "grpc", "containerPort": grpc, "protocol": "TCP"} in server["ports"]
    assert {item["name"]: item.get("value") for item in server["env"]}["MOBILENET_GRPC_PORT"] == str(grpc)
    service = {port["name"]: port for port in one(docs, "Service")["spec"]["ports"]}
    assert service["grpc"] == {
        "name": "grpc", "port": grpc, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"
    }  # fmt: skip


def test_grpc_disabled_leaves_no_port_and_turns_the_server_off() -> None:
    docs = tuple(install({"grpc": {"enabled": False}}))
    server = next(c for c in deployment_pod(docs)["containers"] if c["name"] == "server")
    assert [port["name"] for port in server["ports"]] == ["http"]
    assert {item["name"]: item.get("value") for item in server["env"]}["MOBILENET_GRPC_PORT"] == "0"
    assert [port["name"] for port in one(docs, "Service")["spec"]["ports"]] == ["http"]
