"""What `helm install` tells the operator (NOTES.txt), and the chart's own metadata."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import yaml
from chart import CHART, NAMESPACE, RELEASE, helm_config


def notes(values: dict[str, Any]) -> str:
    with helm.Chart.load(CHART) as chart:
        release = helm_config().install(chart, RELEASE, values, dry_run="client", namespace=NAMESPACE)
    return str(release["notes"])


def test_notes_show_how_to_send_the_api_key_when_one_is_set() -> None:
    text = notes({"apiKey": {"existingSecret": "mobilenet-key", "secretKey": "api-key"}})
    assert "get secret mobilenet-key -o jsonpath='{.data.api-key}' | base64 -d" in text
    assert "curl -H \"X-API-Key: $KEY\" -H 'Content-Type: image/jpeg'" in text


def test_notes_without_a_key_send_none() -> None:
    text = notes({})
    assert "X-API-Key" not in text and "curl http://127.0.0.1:8080/v1/models" in text and "/classify" in text


def test_chart_names_its_home_sources_icon_and_maintainers() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["home"] in chart["sources"] and chart["maintainers"][0]["name"]
    assert chart["icon"].startswith("https://") and chart["icon"].endswith("docs/icon.svg")
    assert (CHART.parent.parent / "docs" / "icon.svg").read_text().startswith("<svg")


def test_notes_warn_while_the_image_is_the_placeholder() -> None:
    assert "WARNING: image.repository is still the chart's placeholder" in notes({})
    assert "WARNING" not in notes({"image": {"repository": "registry.example.com/ml/mobilenet-serve"}})
