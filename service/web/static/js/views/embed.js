// Embed: two images' embeddings and their cosine similarity.

import { el } from "../dom.js";

export function cosine(a, b) {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i += 1) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / Math.sqrt(na * nb);
}

export function renderSimilarity(container, first, second, urls) {
  const similarity = cosine(first.body.results[0].embedding, second.body.results[0].embedding);
  container.replaceChildren(
    el("div", { class: "pair" },
      el("img", { src: urls[0], alt: "First image" }),
      el("img", { src: urls[1], alt: "Second image" })),
    el("p", {}, "Cosine similarity: ",
      el("span", { class: "similarity", id: "similarity", text: similarity.toFixed(3) })),
    el("p", { text: `${first.body.dim}-dimensional embeddings from ${first.body.model} at ${first.body.resolution}px` }),
  );
}
