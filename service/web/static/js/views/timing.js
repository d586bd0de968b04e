// Where an answer's time went: the server's stages (Server-Timing) and what the network and browser added.

import { el, ms } from "../dom.js";

const STAGES = [
  { name: "queue", label: "queue", color: "#f2a900" },
  { name: "preprocess", label: "preprocess", color: "#7fb3e6" },
  { name: "inference", label: "inference", color: "#1f4e79" },
  { name: "server-other", label: "postprocess and the rest", color: "#9aa5b1" },
  { name: "network", label: "network and browser", color: "#d5dbe3" },
];

export function renderTiming(container, { stages, clientMs }, heading = "Latency") {
  container.replaceChildren();
  if (!("total" in stages)) return;
  const serverStages = (stages.queue ?? 0) + (stages.preprocess ?? 0) + (stages.inference ?? 0);
  const parts = {
    ...stages,
    "server-other": Math.max(0, stages.total - serverStages),
    network: Math.max(0, clientMs - stages.total),
  };
  const whole = STAGES.reduce((sum, stage) => sum + parts[stage.name], 0) || 1;
  const stack = el("div", { class: "stack", role: "img",
    "aria-label": `${heading}: ${STAGES.map((s) => `${s.label} ${ms(parts[s.name])}`).join(", ")}` });
  const terms = el("dl");
  for (const stage of STAGES) {
    stack.append(el("span", { style: { width: `${(100 * parts[stage.name]) / whole}%`, background: stage.color } }));
    terms.append(
      el("dt", {}, el("span", { class: "swatch", style: { background: stage.color } }), stage.label),
      el("dd", { "data-stage": stage.name, text: ms(parts[stage.name]) }),
    );
  }
  terms.append(el("dt", { text: "total" }), el("dd", { "data-stage": "total", text: ms(clientMs) }));
  container.append(el("div", { class: "timing" }, el("h3", { text: heading }), stack, terms));
}
