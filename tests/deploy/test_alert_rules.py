"""The chart's alerts under `promtool test rules` (Debian's prometheus package, which .ci/run installs).

Each alert is evaluated on synthetic series that should make it fire and on series that should leave it
silent. The rules are the chart's, rendered with every option on (k8s/ci-values-all.yaml); their
annotations are dropped from the copy promtool reads, because promtool compares an alert's annotations
too, and test_monitoring.py already checks those.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart import ALL_OPTIONS, NAMESPACE, one, rendered
from support import require_tool

PROMTOOL = shutil.which("promtool")
INSTALL_HINT = "these tests need promtool: `apt-get install prometheus` (.ci/run installs it)"
SMALL_MODEL = "mobilenet_v1_0.25_128"  # k8s/ci-values-all.yaml gives it a queue of its own size
OTHER_MODEL = "mobilenet_v2_1.0_224"


def rules() -> list[dict[str, Any]]:
    docs = rendered("all-options")
    groups = copy.deepcopy(one(docs, "PrometheusRule")["spec"]["groups"])  # the rendering is cached: not in place
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    return groups


def selector() -> dict[str, str]:
    return {"namespace": NAMESPACE, "job": one(rendered("all-options"), "Deployment")["metadata"]["name"]}


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    every = {**selector(), **labels}
    return {"series": name + "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(every.items())) + "}", "values": values}


def requests(code: str, per_minute: int, endpoint: str = "/classify", model: str = OTHER_MODEL) -> dict[str, str]:
    return series("mobilenet_requests_total", f"0+{per_minute}x40", endpoint=endpoint, model=model, code=code)


def alert(name: str, fires: bool, **labels: str) -> dict[str, Any]:
    severity = next(r["labels"]["severity"] for g in rules() for r in g["rules"] if r["alert"] == name)
    expected = [{"exp_labels": {**labels, "severity": severity}}] if fires else []
    return {"eval_time": "30m", "alertname": name, "exp_alerts": expected}


def case(inputs: list[dict[str, str]], *checks: dict[str, Any]) -> dict[str, Any]:
    return {"interval": "1m", "input_series": inputs, "alert_rule_test": list(checks)}


ROUTE = {"namespace": NAMESPACE, "endpoint": "/classify", "model": OTHER_MODEL}
SMALL_QUEUE = ALL_OPTIONS["config"]["batching"][SMALL_MODEL]["max_queue_size"]
DEFAULT_QUEUE = ALL_OPTIONS["config"]["default_batching"]["max_queue_size"]


def cases() -> dict[str, dict[str, Any]]:
    pod = {"pod": "mobilenet-0"}
    latency = "mobilenet_request_duration_seconds_bucket"
    return {
        # 10% of the answered requests fail while a burst of 429s is 99% of all responses: it must fire.
        "5xx hidden in a burst of 429s": case(
            [requests("200", 90), requests("500", 10), requests("429", 9900)],
            alert("MobilenetHighErrorRatio", True, **ROUTE),
        ),
        "a few 5xx": case([requests("200", 1000), requests("500", 2)], alert("MobilenetHighErrorRatio", False)),
        "sustained 429s": case([requests("200", 80), requests("429", 20)], alert("MobilenetThrottling", True, **ROUTE)),
        "an odd 429": case([requests("200", 1000), requests("429", 1)], alert("MobilenetThrottling", False)),
        "target down": case(
            [series("up", "0x40", pod="mobilenet-0")],
            alert("MobilenetTargetDown", True, **selector(), pod="mobilenet-0"),
        ),
        "no target at all": case(
            [series("up", "1x40", job="something-else")], alert("MobilenetTargetDown", True, **selector())
        ),
        "target up": case([series("up", "1x40")], alert("MobilenetTargetDown", False)),
        "slow answers": case(
            [
                series(latency, "0+1x40", le="0.1", endpoint="/classify", model=OTHER_MODEL),
                series(latency, "0+1x40", le="0.25", endpoint="/classify", model=OTHER_MODEL),
                series(latency, "0+100x40", le="1", endpoint="/classify", model=OTHER_MODEL),
                series(latency, "0+100x40", le="+Inf", endpoint="/classify", model=OTHER_MODEL),
            ],
            alert("MobilenetHighLatencyP99", True, **ROUTE),
        ),
        "fast answers": case(
            [
                series(latency, "0+100x40", le="0.1", endpoint="/classify", model=OTHER_MODEL),
                series(latency, "0+100x40", le="+Inf", endpoint="/classify", model=OTHER_MODEL),
            ],
            alert("MobilenetHighLatencyP99", False),
        ),
        # The small model's own queue is larger: the depth that saturates the default queue does not saturate it.
        "queues against their own sizes": case(
            [
                series("mobilenet_queue_depth", f"{DEFAULT_QUEUE}x40", model=OTHER_MODEL, **pod),
                series("mobilenet_queue_depth", f"{DEFAULT_QUEUE}x40", model=SMALL_MODEL, **pod),
            ],
            alert("MobilenetQueueSaturated", True, namespace=NAMESPACE, model=OTHER_MODEL, **pod),
        ),
        "a full small-model queue": case(
            [series("mobilenet_queue_depth", f"{SMALL_QUEUE}x40", model=SMALL_MODEL, **pod)],
            alert("MobilenetQueueSaturated", True, namespace=NAMESPACE, model=SMALL_MODEL, **pod),
        ),
        "a model that failed to load": case(
            [series("mobilenet_model_loaded", "0x40", model=OTHER_MODEL, **pod)],
            alert("MobilenetModelNotLoaded", True, **selector(), model=OTHER_MODEL, **pod),
        ),
        "models loaded": case(
            [series("mobilenet_model_loaded", "1x40", model=OTHER_MODEL, **pod)],
            alert("MobilenetModelNotLoaded", False),
        ),
        "store files changed": case(
            [series("mobilenet_model_store_intact", "0x40", model=OTHER_MODEL, **pod)],
            alert("MobilenetModelStoreChanged", True, **selector(), model=OTHER_MODEL, **pod),
        ),
        "store intact": case(
            [series("mobilenet_model_store_intact", "1x40", model=OTHER_MODEL, **pod)],
            alert("MobilenetModelStoreChanged", False),
        ),
    }


@pytest.fixture(scope="module")
def promtool() -> str:
    require_tool(PROMTOOL, INSTALL_HINT)
    assert PROMTOOL is not None
    return PROMTOOL


def run_promtool(
    promtool: str, folder: Path, tests: list[dict[str, Any]], groups: list[dict[str, Any]] | None = None
) -> subprocess.CompletedProcess[str]:
    (folder / "rules.yaml").write_text(yaml.safe_dump({"groups": groups or rules()}))
    test_file = folder / "tests.yaml"
    test_file.write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}))
    return subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=120)


def test_the_rules_pass_promtools_checks(promtool: str, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rules()}))
    checked = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("name", list(cases()))
def test_each_alert_fires_when_it_should_and_only_then(promtool: str, tmp_path: Path, name: str) -> None:
    result = run_promtool(promtool, tmp_path, [cases()[name]])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_old_error_ratio_would_have_missed_the_5xx(promtool: str, tmp_path: Path) -> None:
    # The same series against the expression before the fix (429s in the denominator): silent.
    groups = rules()
    for rule in groups[0]["rules"]:
        if rule["alert"] == "MobilenetHighErrorRatio":
            rule["expr"] = rule["expr"].replace(', code!="429"}', "}")
    result = run_promtool(promtool, tmp_path, [cases()["5xx hidden in a burst of 429s"]], groups)
    assert result.returncode != 0 and "MobilenetHighErrorRatio" in result.stdout + result.stderr
