"""The chart's `config` block in values.schema.json against the service's own settings.

k8s/tools/generate_values_schema.py writes that block from `service.config.Settings`. These tests fail
when the committed file has fallen behind Settings, when a setting is neither in the file nor set by
the Deployment, when Helm would accept a config file the service refuses at start-up, and when
values.yaml departs from a service default without a reason stated here. No server is started:
Settings reads the file as the pod does, in this process.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from service.config import Settings

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "k8s" / "mobilenet-serve"
GENERATOR = REPO / "k8s" / "tools" / "generate_values_schema.py"

# values.yaml's own choices where the service's default does not suit a pod, and why.
CHART_DEFAULTS = {
    "intra_op_threads": "the pod's CPU limit; the service would take the node's core count",
    "codec_threads": "the pod's CPU limit, as intra_op_threads",
    "shutdown_grace_seconds": "room beyond default_batching.timeout_ms for the last queued requests",
    "batching": "small DeepLab batches, which bound the pod's memory",
}


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_values_schema", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generator = load_generator()
COMMITTED = (CHART / "values.schema.json").read_text()
BLOCK = json.loads(COMMITTED)["properties"]["config"]
CHART_CONFIG = yaml.safe_load((CHART / "values.yaml").read_text())["config"]


@pytest.fixture(autouse=True)
def no_service_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The pod's environment sets only what the chart keeps out of the file; a developer's must not count.
    for key in list(os.environ):
        if key.startswith("MOBILENET_"):
            monkeypatch.delenv(key)


def service_loads(config: dict[str, Any], tmp_path: Path) -> Settings | None:
    """Settings read from `config` as the pod's config file, or None where the service refuses it."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    try:
        return Settings(config=path)
    except ValidationError:
        return None


def samples(schema: dict[str, Any]) -> list[Any]:
    """Values on, just inside and just outside every bound and enum that `schema` states."""
    kind = schema.get("type")
    if "enum" in schema:
        return [*schema["enum"], schema["enum"][0].title(), "verbose"]
    if kind in ("integer", "number"):
        found: list[Any] = [-1, 0, 0.5, 10**9]
        for bound in ("minimum", "maximum", "exclusiveMinimum"):
            if bound in schema:
                found += [schema[bound] - 1, schema[bound], schema[bound] + 1]
        return found
    if kind == "boolean":
        return [True, False, None]
    if kind == "string":
        return ["", "mobilenet_v1_1.0_224"]
    if kind == "array":
        return [[], ["mobilenet_v1_1.0_224"], ["mobilenet_v1_1.0_224"] * 2, [""]]
    if "properties" in schema:
        return [{knob: value} for knob, knob_schema in schema["properties"].items() for value in samples(knob_schema)]
    return [{"mobilenet_v1_1.0_224": entry} for entry in [{}, *samples(schema["additionalProperties"])]]


def cases() -> Iterator[tuple[str, dict[str, Any]]]:
    """values.yaml's config with one setting changed to each of its samples."""
    for name, schema in BLOCK["properties"].items():
        for value in samples(schema):
            if name == "default_batching":
                value = {**CHART_CONFIG[name], **value}
            yield name, {**CHART_CONFIG, name: value}


def test_committed_schema_is_the_generators_output() -> None:
    assert generator.render(COMMITTED) == COMMITTED, (
        "values.schema.json has fallen behind service.config.Settings: run python k8s/tools/generate_values_schema.py"
    )


def test_each_setting_is_in_the_file_or_set_by_the_deployment() -> None:
    in_file = set(BLOCK["properties"])
    by_chart = set(generator.CHART_SETS)
    assert in_file | by_chart == set(Settings.model_fields)
    assert not in_file & by_chart
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    for name in by_chart:
        assert f"name: MOBILENET_{name.upper()}" in deployment, name


def test_helm_accepts_no_config_file_the_service_refuses(tmp_path: Path) -> None:
    validator = jsonschema.Draft7Validator(BLOCK)
    refused = [
        (name, config[name])
        for name, config in cases()
        if validator.is_valid(config) and service_loads(config, tmp_path) is None
    ]
    assert not refused


def test_helm_refuses_more_only_where_the_generator_narrows(tmp_path: Path) -> None:
    validator = jsonschema.Draft7Validator(BLOCK)
    narrower = {
        name
        for name, config in cases()
        if not validator.is_valid(config) and service_loads(config, tmp_path) is not None
    }
    # The level's enum spells each name in lower and upper case; the service takes any case.
    assert narrower <= set(generator.NARROWER) | {"log_level"}


def test_chart_defaults_are_the_services_unless_the_pod_needs_others(tmp_path: Path) -> None:
    chart = service_loads(CHART_CONFIG, tmp_path)
    assert chart is not None
    service = Settings()
    # A default computed from the machine (its core count) is never the pod's.
    computed = {name for name in CHART_CONFIG if Settings.model_fields[name].default_factory is not None}
    differ = {name for name in CHART_CONFIG if getattr(chart, name) != getattr(service, name)}
    assert differ | computed == set(CHART_DEFAULTS)
