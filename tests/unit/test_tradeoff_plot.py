"""The trade-off plot: every point labelled (α, ρ) in both panels, the frontiers, the published figures."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections import Counter
from pathlib import Path

from support import REPO, STORE

from service.tradeoff_plot import svg
from service.tradeoffs import PROFILE_NAME, on_frontier

SVG = "{http://www.w3.org/2000/svg}"


def _answer() -> dict:
    """A /v1/tradeoffs answer: the committed profile's points, with a latency that grows with multiply-adds."""
    profile = json.loads((STORE / PROFILE_NAME).read_text())
    points = [{**point, "latency_ms": 1.0 + point["macs"] / 1e8, "timing": None} for point in profile["points"]]
    points[0]["latency_ms"] = None  # a point the calibration did not reach: only in the multiply-adds panel
    return {"dataset": profile["dataset"], "command": profile["command"], "points": points}


def test_each_point_is_drawn_and_labelled_in_each_panel_it_belongs_to() -> None:
    answer = _answer()
    root = ElementTree.fromstring(svg(answer))
    dots = root.findall(f".//{SVG}circle[@class='point']")
    points = answer["points"]
    assert len(dots) == 2 * len(points) - 1
    labels = Counter(text.text for text in root.iter(f"{SVG}text"))
    expected: Counter[str] = Counter()
    for point in points:  # several models share an (α, ρ); their colour tells them apart
        expected[f"({point['alpha']}, {point['resolution']})"] += 1 if point["latency_ms"] is None else 2
    assert all(labels[label] == count for label, count in expected.items()), (labels, expected)
    published = [p for p in points if p["published_top1"]]
    assert len(root.findall(f".//{SVG}circle[@class='published']")) == 2 * len(published) - (
        1 if points[0]["published_top1"] and points[0]["latency_ms"] is None else 0
    )
    assert answer["dataset"]["name"] in root.find(f"{SVG}title").text


def test_the_frontier_lines_join_the_frontier_points() -> None:
    answer = _answer()
    points = answer["points"]
    lines = ElementTree.fromstring(svg(answer)).findall(f".//{SVG}polyline[@class='frontier']")
    timed = [p for p in points if p["latency_ms"] is not None]
    by_latency = on_frontier([p["top1"] for p in timed], [p["latency_ms"] for p in timed])
    by_macs = on_frontier([p["top1"] for p in points], [p["macs"] * 1e-6 for p in points])
    assert [len(line.get("points").split()) for line in lines] == [sum(by_latency), sum(by_macs)]


def test_the_command_writes_the_svg_from_a_saved_answer(tmp_path: Path) -> None:
    source = tmp_path / "tradeoffs.json"
    source.write_text(json.dumps(_answer()))
    out = tmp_path / "plot.svg"
    command = [sys.executable, "-m", "service.tradeoff_plot", str(source), "--out", str(out)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert ElementTree.parse(out).getroot().tag == f"{SVG}svg"
