// Detect: a box with its label and score over the photo for each detection (and a face detector's keypoints),
// and the same as a table.

import { el, svg } from "../dom.js";

// The answer's `method`: how its boxes were made.
const METHODS = { ssd: "single-shot detector", mask_regions: "mask regions" };

export function renderDetections(container, overlay, body) {
  const { width, height, detections } = body.results[0];
  overlay.setAttribute("viewBox", `0 0 ${width} ${height}`);
  overlay.setAttribute("preserveAspectRatio", "none");
  const fontSize = Math.max(12, Math.round(width / 40));
  overlay.replaceChildren(
    ...detections.map((d) => {
      const [x0, y0, x1, y1] = d.box;
      const caption = `${d.label} ${(100 * d.score).toFixed(0)}%`;
      const points = (d.keypoints ?? []).map((k) =>
        svg("circle", { class: "keypoint", cx: k.x, cy: k.y, r: Math.max(2, fontSize / 5), "data-name": k.name },
          svg("title", { text: k.name.replaceAll("_", " ") })));
      return svg("g", { class: "detection", "data-label": d.label },
        svg("title", { text: caption }),
        svg("rect", { x: x0, y: y0, width: x1 - x0, height: y1 - y0 }),
        svg("text", { x: x0 + 4, y: Math.max(fontSize, y0 - 4), "font-size": fontSize, text: caption }),
        ...points);
    }),
  );
  const summary = detections.length
    ? `${detections.length} detections: ${detections.map((d) => d.label).join(", ")}`
    : "No detections";
  overlay.setAttribute("aria-label", summary);
  overlay.removeAttribute("hidden");  // an SVG element has no `hidden` property, only the attribute
  container.replaceChildren(
    el("p", { text: `${body.model} at ${body.resolution}px (${METHODS[body.method] ?? body.method}): ${summary}` }),
    el("table", {},
      el("caption", { text: "Boxes in original-image pixels" }),
      el("thead", {}, el("tr", {}, ...["label", "score", "box [x0, y0, x1, y1]", "area (px)"]
        .map((name) => el("th", { scope: "col", text: name })))),
      el("tbody", {}, ...detections.map((d) => el("tr", {},
        el("td", { text: d.label }),
        el("td", { class: "num", text: `${(100 * d.score).toFixed(1)}%` }),
        el("td", { text: `[${d.box.map((v) => Math.round(v)).join(", ")}]` }),
        el("td", { class: "num", text: d.area ?? "" }))))),
  );
}
