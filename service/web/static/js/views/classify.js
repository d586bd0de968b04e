// Classify: the top-k classes as labelled bars, and a side-by-side table of every variant run on this image.

import { el, ms } from "../dom.js";

export function renderPredictions(container, body) {
  const predictions = body.results[0].predictions;
  const bars = el("ol", { class: "bars", "aria-label": `Top ${predictions.length} classes from ${body.model}` });
  for (const p of predictions) {
    const percent = (100 * p.score).toFixed(p.score < 0.01 ? 2 : 1);
    bars.append(
      el("li", { "data-class-id": p.class_id },
        el("span", { class: "label", title: p.label, text: p.label }),
        el("span", { class: "track", "aria-hidden": "true" },
          el("span", { class: "fill", style: { display: "block", width: `${100 * p.score}%` } })),
        el("span", { class: "score", text: `${percent}%` })),
    );
  }
  const selection = body.selection
    ? el("p", { class: "selection", text:
        `Chosen automatically: ${body.model} at ${body.resolution}px. ${body.selection.reason} ` +
        `(predicted ${ms(body.selection.predicted_ms)} within a budget of ${ms(body.selection.budget_ms)}; ` +
        `expected top-1 ${body.selection.expected_top1.toFixed(1)}%).` })
    : null;
  container.replaceChildren(
    ...[el("p", { text: `${body.model} at ${body.resolution}px` }), selection, bars].filter(Boolean));
}

// One row per (model, resolution) run on the current image; a rerun replaces its row.
export class Comparison {
  constructor(container) {
    this.container = container;
    this.rows = new Map();
  }

  clear() {
    this.rows.clear();
    this.container.replaceChildren();
  }

  add(body, manifest, answer) {
    const top = body.results[0].predictions[0];
    this.rows.set(`${body.model}@${body.resolution}`, {
      model: body.model,
      alpha: manifest?.alpha,
      resolution: body.resolution,
      macs: manifest?.macs != null ? (manifest.macs * (body.resolution / manifest.native_resolution) ** 2) : null,
      label: top.label,
      score: top.score,
      serverMs: answer.stages.total,
      clientMs: answer.clientMs,
    });
    this.render();
  }

  render() {
    const rows = [...this.rows.values()].sort((a, b) => (b.alpha ?? 0) - (a.alpha ?? 0) || b.resolution - a.resolution);
    const table = el("table", { id: "comparison-table" },
      el("caption", { text: "Variants compared on this image" }),
      el("thead", {}, el("tr", {}, ...["model", "α", "ρ (px)", "MMACs", "top class", "score", "server", "seen here"]
        .map((name) => el("th", { scope: "col", text: name })))),
      el("tbody", {}, ...rows.map((row) => el("tr", { "data-model": row.model, "data-resolution": row.resolution },
        el("th", { scope: "row", text: row.model }),
        el("td", { class: "num", text: row.alpha ?? "–" }),
        el("td", { class: "num", text: row.resolution }),
        el("td", { class: "num", text: row.macs == null ? "–" : (row.macs / 1e6).toFixed(0) }),
        el("td", { class: "top-label", text: row.label }),
        el("td", { class: "num", text: `${(100 * row.score).toFixed(1)}%` }),
        el("td", { class: "num", text: row.serverMs == null ? "–" : ms(row.serverMs) }),
        el("td", { class: "num", text: ms(row.clientMs) })))));
    this.container.replaceChildren(table);
  }
}
