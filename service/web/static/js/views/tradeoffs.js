// The accuracy/latency plot of the served variants, from /v1/tradeoffs: measured points labelled (α, ρ),
// the Pareto frontier as a line, and the papers' published top-1 as open circles where it exists.

import { el, svg } from "../dom.js";

const SIZE = { width: 900, height: 420, left: 56, right: 20, top: 16, bottom: 44 };

function scale(values, from, to) {
  const low = Math.min(...values);
  const high = Math.max(...values);
  const span = high - low || 1;
  return (v) => from + ((v - low) / span) * (to - from);
}

function ticks(values, count = 6) {
  const low = Math.min(...values);
  const high = Math.max(...values);
  const step = (high - low) / (count - 1) || 1;
  return Array.from({ length: count }, (_, i) => low + i * step);
}

export function renderTradeoffs(container, table) {
  const measured = table.points.filter((p) => p.top1 != null);
  const timed = measured.some((p) => p.latency_ms != null);
  // Until this host's calibration exists, cost is the model's MACs at that resolution.
  const cost = timed ? (p) => p.latency_ms : (p) => p.macs / 1e6;
  const points = measured.filter((p) => cost(p) != null);
  if (!points.length) {
    container.replaceChildren(el("p", { text: "No measured trade-off points on this server." }));
    return;
  }
  const accuracies = points.flatMap((p) => [p.top1, p.published_top1].filter((v) => v != null));
  const x = scale(points.map(cost), SIZE.left, SIZE.width - SIZE.right);
  const y = scale(accuracies, SIZE.height - SIZE.bottom, SIZE.top);
  const xLabel = timed ? "latency per image on this host (ms, decode included)" : "MMACs per image";
  const frontier = points.filter((p) => p.frontier).sort((a, b) => cost(a) - cost(b));
  const plot = svg("svg", { viewBox: `0 0 ${SIZE.width} ${SIZE.height}`, role: "img",
      "aria-label": `Top-1 accuracy against ${xLabel} for ${points.length} points, ${frontier.length} on the frontier` },
    svg("g", { class: "axis" },
      svg("line", { x1: SIZE.left, y1: SIZE.height - SIZE.bottom, x2: SIZE.width - SIZE.right, y2: SIZE.height - SIZE.bottom }),
      svg("line", { x1: SIZE.left, y1: SIZE.top, x2: SIZE.left, y2: SIZE.height - SIZE.bottom }),
      ...ticks(points.map(cost)).map((v) => svg("text", { x: x(v), y: SIZE.height - SIZE.bottom + 16, "text-anchor": "middle", text: v.toFixed(1) })),
      ...ticks(accuracies).map((v) => svg("text", { x: SIZE.left - 6, y: y(v) + 4, "text-anchor": "end", text: v.toFixed(0) })),
      svg("text", { x: (SIZE.left + SIZE.width) / 2, y: SIZE.height - 6, "text-anchor": "middle", text: xLabel }),
      svg("text", { x: 14, y: SIZE.height / 2, transform: `rotate(-90 14 ${SIZE.height / 2})`, "text-anchor": "middle", text: "top-1 (%)" })),
    svg("polyline", { class: "frontier", points: frontier.map((p) => `${x(cost(p))},${y(p.top1)}`).join(" ") }),
    ...points.filter((p) => p.published_top1 != null).map((p) =>
      svg("circle", { class: "published", cx: x(cost(p)), cy: y(p.published_top1), r: 5 },
        svg("title", { text: `${p.model} at ${p.resolution}px: published top-1 ${p.published_top1}%` }))),
    ...points.map((p) => svg("g", { class: "point", "data-model": p.model, "data-resolution": p.resolution },
      svg("circle", { class: `measured${p.frontier ? " on-frontier" : ""}`, cx: x(cost(p)), cy: y(p.top1), r: 4 },
        svg("title", { text: `${p.model} at ${p.resolution}px: top-1 ${p.top1}%, ${cost(p).toFixed(2)} ${timed ? "ms" : "MMACs"}` })),
      p.frontier ? svg("text", { x: x(cost(p)) + 6, y: y(p.top1) - 6, text: `α${p.alpha ?? "?"} ρ${p.resolution}` }) : null)),
  );
  const dataset = table.dataset;
  container.replaceChildren(
    plot,
    el("p", { text: `Filled: measured on ${dataset?.name ?? "the store's labelled set"} (${dataset?.images ?? "?"} images); ` +
      "dark: on the frontier; open red circles: published top-1 (papers and model cards)." }),
  );
}
