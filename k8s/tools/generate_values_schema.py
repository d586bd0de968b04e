"""Writes the `config` block of the chart's values.schema.json from the service's own settings model.

    python k8s/tools/generate_values_schema.py          # rewrite k8s/mobilenet-serve/values.schema.json
    python k8s/tools/generate_values_schema.py --check  # exit 1 if the committed file is not its output

The chart's `config` value becomes the YAML file the service reads at start-up (templates/configmap.yaml),
and `service.config.Settings` refuses unknown keys and out-of-range values there. Deriving the block
from `Settings.model_json_schema()` makes `helm install` refuse what the pod would crash on, for as long
as the two exist; tests/deploy/test_chart_config_schema.py fails when the committed file has fallen
behind. The rest of values.schema.json is the chart's own and is left as it is.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SCHEMA_FILE = REPO / "k8s" / "mobilenet-serve" / "values.schema.json"

sys.path.insert(0, str(REPO))

from service.config import Settings  # noqa: E402

# Settings the chart passes outside the config file (templates/deployment.yaml), so the block refuses
# them: two sources for one setting would leave which one wins to the service's precedence rules.
CHART_SETS = {
    "host": "MOBILENET_HOST: 0.0.0.0, so that the kubelet's probes and the Service reach the pod",
    "port": "MOBILENET_PORT from containerPort, which the probes and the Service also use",
    "grpc_port": "MOBILENET_GRPC_PORT from grpc.port, or 0 when grpc.enabled is false",
    "config": "MOBILENET_CONFIG: the path where this very file is mounted",
    "store": "MOBILENET_STORE from modelStore, or the image's own store",
    "api_key": "MOBILENET_API_KEY from apiKey.existingSecret: a key must never land in a ConfigMap",
}

# Where the chart asks for more than the service does; every value these allow, Settings accepts too.
NARROWER: dict[str, dict[str, Any]] = {
    # The template adds it to other whole seconds for terminationGracePeriodSeconds, an integer field.
    "shutdown_grace_seconds": {"type": "integer"},
    # A name that is empty or listed twice is a mistake in the values, not a variant.
    "models": {"items": {"minLength": 1}, "uniqueItems": True},
    # values.yaml states each of these; `instances` is left out, to follow intra_op_threads.
    "default_batching": {"required": ["max_batch_size", "max_queue_delay_ms", "max_queue_size", "timeout_ms"]},
    # An empty override would give the model the service's built-in batching, not default_batching.
    "batching": {"additionalProperties": {"minProperties": 1}},
}

REQUIRED = [
    # The service's default is the node's core count, which oversubscribes a pod's CPU limit.
    "intra_op_threads",
    # The templates read these: the pod's termination grace period and the queue-saturation alert.
    "shutdown_grace_seconds",
    "default_batching",
    "batching",
]

# Helm takes defaults from values.yaml, and the titles only repeat the keys.
ANNOTATIONS = ("title", "default", "description")


def log_levels() -> list[str]:
    """The level names the settings' validator accepts, which its JSON schema cannot show."""
    probe = Settings.model_construct()
    names = sorted(logging.getLevelNamesMapping().items(), key=lambda item: (item[1], item[0]))
    accepted = []
    for name, _ in names:
        for spelling in (name.lower(), name):
            try:
                Settings.__pydantic_validator__.validate_assignment(probe, "log_level", spelling)
            except ValueError:
                continue
            accepted.append(spelling)
    return accepted


def _plain(node: Any, defs: dict[str, Any]) -> Any:
    """Pydantic's schema as the chart states it: references inlined, no annotations, no null."""
    if isinstance(node, list):
        return [_plain(item, defs) for item in node]
    if not isinstance(node, dict):
        # JSON Schema compares 1 and 1.0 as equal; pydantic writes float bounds as 10000.0.
        return int(node) if isinstance(node, float) and node.is_integer() else node
    if "$ref" in node:
        return _plain(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    branches = [branch for branch in node.get("anyOf", []) if branch != {"type": "null"}]
    if len(branches) == 1:
        # The chart's values have no null: a setting left out gets the service's default.
        return _plain(branches[0], defs)
    plain = {key: _plain(value, defs) for key, value in node.items() if key not in ANNOTATIONS}
    if "type" in plain:
        plain = {"type": plain.pop("type"), **plain}
    return plain


def _narrowed(schema: dict[str, Any], narrower: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(schema)
    for key, value in narrower.items():
        result[key] = _narrowed(result[key], value) if isinstance(value, dict) and key in result else value
    return result


def config_block() -> dict[str, Any]:
    settings = Settings.model_json_schema()
    fields = settings["properties"]
    unknown = (set(CHART_SETS) | set(NARROWER) | set(REQUIRED)) - set(fields)
    if unknown:
        raise KeyError(f"not fields of Settings any more: {sorted(unknown)}")
    properties = {
        name: _narrowed(_plain(field, settings["$defs"]), NARROWER.get(name, {}))
        for name, field in fields.items()
        if name not in CHART_SETS
    }
    properties["log_level"]["enum"] = log_levels()
    default_batching = properties["default_batching"]
    unknown = set(default_batching["required"]) - set(default_batching["properties"])
    if unknown:
        raise KeyError(f"not fields of BatchingConfig any more: {sorted(unknown)}")
    return {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        "required": REQUIRED,
        "description": (
            "The service's config file, generated from service.config.Settings by "
            f"k8s/tools/generate_values_schema.py. The chart sets {', '.join(CHART_SETS)} outside it."
        ),
    }


def render(committed: str) -> str:
    """The whole values.schema.json, its config block replaced, formatted as it is committed."""
    schema = json.loads(committed)
    schema["properties"]["config"] = config_block()
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file differs")
    args = parser.parse_args()
    committed = SCHEMA_FILE.read_text()
    generated = render(committed)
    if args.check:
        if generated != committed:
            print(f"{SCHEMA_FILE.relative_to(REPO)} is out of date: run {Path(__file__).resolve().relative_to(REPO)}")
            return 1
        return 0
    SCHEMA_FILE.write_text(generated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
