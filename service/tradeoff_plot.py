"""The trade-off as a picture: top-1 against latency on this host and against multiply-adds, as SVG.

    python -m service.tradeoff_plot SOURCE [--out docs/tradeoffs.svg]

SOURCE is a running server's `/v1/tradeoffs` (an http:// URL) or a file holding its answer. Each
point is a dot labelled (α, ρ), where ρ is the input resolution; the frontier of each panel is drawn as a
line; the published top-1 of a variant at its native resolution is a hollow dot labelled "published".
Plain SVG written here, so that the web page can show it and no plotting library is needed.
"""

from __future__ import annotations

import argparse
import json
import urllib.request
from html import escape
from pathlib import Path
from typing import Any

from .tradeoffs import on_frontier

WIDTH, HEIGHT = 560, 420  # one panel
MARGIN = 56
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def load(source: str) -> dict[str, Any]:
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=30) as response:  # noqa: S310  the operator's own server
            return json.loads(response.read())  # type: ignore[no-any-return]
    return json.loads(Path(source).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def svg(document: dict[str, Any]) -> str:
    """Two panels side by side: top-1 against latency_ms, and against multiply-adds."""
    points = [p for p in document["points"] if p["top1"] is not None]
    models = sorted({p["model"] for p in points})
    colour = {model: COLOURS[i % len(COLOURS)] for i, model in enumerate(models)}
    timed = [p for p in points if p["latency_ms"] is not None]
    panels = [
        _panel(timed, "latency_ms", "latency on this host, ms (decode + one image alone)", colour, 0),
        _panel(points, "macs", "multiply-adds per image, millions", colour, WIDTH, scale=1e-6),
    ]
    legend = "".join(
        f'<circle cx="{MARGIN + 10}" cy="{HEIGHT + 18 + 16 * i}" r="4" fill="{colour[m]}"/>'
        f'<text x="{MARGIN + 20}" y="{HEIGHT + 22 + 16 * i}">{escape(m)}</text>'
        for i, m in enumerate(models)
    )
    dataset = document["dataset"]
    title = f"top-1 on {dataset['name']} ({dataset['images']} images); labels (α, ρ); hollow: published top-1"
    height = HEIGHT + 30 + 16 * len(models)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * WIDTH}" height="{height}" '
        f'font-family="sans-serif" font-size="11" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
        f'<text x="{MARGIN}" y="16" font-size="13">{escape(title)}</text>{"".join(panels)}{legend}</svg>\n'
    )


def _panel(
    points: list[dict[str, Any]], key: str, label: str, colour: dict[str, str], left: int, scale: float = 1.0
) -> str:
    if not points:
        return f'<text x="{left + MARGIN}" y="{HEIGHT // 2}">no {escape(key)} measured</text>'
    xs = [p[key] * scale for p in points]
    accuracies = [p["top1"] for p in points] + [p["published_top1"] for p in points if p["published_top1"]]
    x_low, x_high = 0.0, max(xs) * 1.05
    y_low, y_high = min(accuracies) - 2, max(accuracies) + 2

    def at(x: float, y: float) -> tuple[float, float]:
        px = left + MARGIN + (x - x_low) / (x_high - x_low) * (WIDTH - 2 * MARGIN)
        py = HEIGHT - MARGIN + 30 - (y - y_low) / (y_high - y_low) * (HEIGHT - 2 * MARGIN)
        return round(px, 1), round(py, 1)

    parts = [_axes(left, label, (x_low, x_high), (y_low, y_high), at)]
    flags = on_frontier([p["top1"] for p in points], xs)
    frontier = sorted((x, p["top1"]) for x, p, flag in zip(xs, points, flags, strict=True) if flag)
    line = " ".join(f"{px},{py}" for px, py in (at(x, y) for x, y in frontier))
    parts.append(f'<polyline class="frontier" points="{line}" fill="none" stroke="#444" stroke-dasharray="4 3"/>')
    for x, point in zip(xs, points, strict=True):
        px, py = at(x, point["top1"])
        name = f"({point['alpha']}, {point['resolution']})"
        tip = f"{point['model']} at {point['resolution']}: top-1 {point['top1']}%, {key} {x:.3g}"
        parts.append(
            f'<circle class="point" cx="{px}" cy="{py}" r="4" fill="{colour[point["model"]]}">'
            f"<title>{escape(tip)}</title></circle>"
            f'<text x="{px + 5}" y="{py - 5}" font-size="9">{escape(name)}</text>'
        )
        if point["published_top1"]:
            qx, qy = at(x, point["published_top1"])
            parts.append(
                f'<circle class="published" cx="{qx}" cy="{qy}" r="4" fill="none" stroke="{colour[point["model"]]}"/>'
                f'<text x="{qx + 5}" y="{qy + 12}" font-size="9">{escape(name)} published</text>'
            )
    return "".join(parts)


def _axes(left: int, label: str, xr: tuple[float, float], yr: tuple[float, float], at: Any) -> str:
    x0, y0 = at(xr[0], yr[0])
    x1, y1 = at(xr[1], yr[1])
    ticks = []
    for i in range(6):
        x = xr[0] + (xr[1] - xr[0]) * i / 5
        y = yr[0] + (yr[1] - yr[0]) * i / 5
        tx, _ = at(x, yr[0])
        _, ty = at(xr[0], y)
        ticks.append(f'<text x="{tx}" y="{y0 + 14}" text-anchor="middle">{x:.3g}</text>')
        ticks.append(f'<text x="{x0 - 6}" y="{ty + 4}" text-anchor="end">{y:.0f}</text>')
    return (
        f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#000"/>'
        f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#000"/>{"".join(ticks)}'
        f'<text x="{(x0 + x1) / 2}" y="{y0 + 30}" text-anchor="middle">{escape(label)}</text>'
        f'<text x="{left + 14}" y="{(y0 + y1) / 2}" transform="rotate(-90 {left + 14} {(y0 + y1) / 2})" '
        f'text-anchor="middle">top-1 %</text>'
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="http://HOST:PORT/v1/tradeoffs, or a file holding its answer")
    parser.add_argument("--out", type=Path, default=Path("docs") / "tradeoffs.svg")
    args = parser.parse_args(argv)
    args.out.write_text(svg(load(args.source)), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
