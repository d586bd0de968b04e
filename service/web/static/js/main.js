// The page: one image, one task, one answer at a time. Each view module draws its own answer.

import { ApiError, apiKey, getJson, postImage, setApiKey } from "./api.js";
import { el } from "./dom.js";
import { SAMPLES, sampleImage, wireImageInput } from "./image_input.js";
import { Comparison, renderPredictions } from "./views/classify.js";
import { renderDetections } from "./views/detect.js";
import { renderSimilarity } from "./views/embed.js";
import { renderMask } from "./views/segment.js";
import { renderTiming } from "./views/timing.js";
import { renderTradeoffs } from "./views/tradeoffs.js";

const $ = (id) => document.getElementById(id);
// A task's models are those whose manifest lists one of what the task needs: /detect and /segment also
// serve MediaPipe's face detectors and person segmenter.
const NEEDS = {
  classify: ["classify"], embed: ["embed"], detect: ["segment", "face_detect"], segment: ["segment", "person_segment"],
};
const AUTO = "auto";

const state = { image: null, imageUrl: null, models: [], auto: null };
const comparison = new Comparison($("comparison"));

function task() {
  return document.querySelector("input[name=task]:checked").value;
}

function manifestOf(name) {
  return state.models.find((m) => m.name === name)?.manifest;
}

function showError(error) {
  const box = $("error");
  if (!error) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.hidden = false;
  box.textContent = error instanceof ApiError ? `${error.status}: ${error.message}` : `Request failed: ${error.message}`;
  if (error instanceof ApiError && error.status === 401) $("api-key").focus();
}

function clearOverlays() {
  $("boxes").setAttribute("hidden", "");
  $("boxes").replaceChildren();
  $("mask-overlay").hidden = true;
  $("mask-overlay").removeAttribute("src");
}

function setImage(file, description) {
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.image = file;
  state.imageUrl = URL.createObjectURL(file);
  $("preview").hidden = false;
  $("preview-image").src = state.imageUrl;
  $("preview-image").alt = `The image to run: ${description}`;
  $("preview-caption").textContent = `${file.name || description} (${(file.size / 1024).toFixed(0)} KiB)`;
  clearOverlays();
  comparison.clear();
  $("result").replaceChildren();
  $("timing").replaceChildren();
  showError(null);
}

function fillModels() {
  const select = $("model");
  const current = select.value;
  const fitting = state.models.filter((m) => m.loaded && NEEDS[task()].some((t) => m.manifest?.tasks?.includes(t)));
  const options = [el("option", { value: "", text: "server's default" })];
  if (task() === "classify" && state.auto?.available) {
    options.push(el("option", { value: AUTO, text: "auto: most accurate within the latency budget" }));
  }
  for (const model of fitting) {
    const m = model.manifest;
    const alpha = m.alpha != null ? `α ${m.alpha}, ` : "";
    options.push(el("option", { value: model.name, text: `${model.name} (${alpha}${m.precision ?? ""})` }));
  }
  select.replaceChildren(...options);
  select.value = [...select.options].some((o) => o.value === current) ? current : "";
  fillResolutions();
}

function fillResolutions() {
  const select = $("resolution");
  const manifest = manifestOf($("model").value);
  const sizes = manifest?.resolutions ?? [];
  select.replaceChildren(
    el("option", { value: "", text: manifest ? `native (${manifest.native_resolution})` : "native" }),
    ...sizes.map((size) => el("option", { value: size, text: `${size} px` })),
  );
  showFor();
}

// Options shown only for some tasks (data-task) or only with, or without, model=auto.
function showFor() {
  const auto = $("model").value === AUTO;
  for (const node of document.querySelectorAll("[data-task]")) node.hidden = !node.dataset.task.split(" ").includes(task());
  for (const node of document.querySelectorAll("[data-only=auto]")) node.hidden = !auto;
  for (const node of document.querySelectorAll("[data-hide-for=auto]")) node.hidden = auto;
}

function params(model, resolution) {
  if (model === AUTO) return { model, latency_budget_ms: $("budget").value };
  return { model, resolution };
}

async function secondImage() {
  const picked = $("second-file").files[0];
  return picked ?? sampleImage($("second-sample").value);
}

async function run(model = $("model").value, resolution = $("resolution").value) {
  if (!state.image) throw new Error("choose an image first");
  const image = state.image;
  clearOverlays();
  switch (task()) {
    case "classify": {
      const answer = await postImage("/classify", { ...params(model, resolution), top_k: $("top-k").value }, image);
      renderPredictions($("result"), answer.body);
      comparison.add(answer.body, manifestOf(answer.body.model), answer);
      return answer;
    }
    case "detect": {
      // min_area is DeepLab's; a face detector refuses it.
      const faces = manifestOf(model)?.tasks?.includes("face_detect");
      const query = faces ? { model, resolution } : { model, resolution, min_area: $("min-area").value };
      const answer = await postImage("/detect", query, image);
      renderDetections($("result"), $("boxes"), answer.body);
      return answer;
    }
    case "segment": {
      const answer = await postImage("/segment", { model, resolution }, image, "blob");
      await renderMask($("result"), $("mask-overlay"), answer.body, answer);
      return answer;
    }
    default: {
      const other = await secondImage();
      const first = await postImage("/embed", { model, resolution }, image);
      const second = await postImage("/embed", { model, resolution }, other);
      renderSimilarity($("result"), first, second, [state.imageUrl, URL.createObjectURL(other)]);
      return first;
    }
  }
}

async function guarded(action) {
  const buttons = [$("run"), $("run-all")];
  buttons.forEach((b) => { b.disabled = true; });
  showError(null);
  try {
    await action();
  } catch (error) {
    showError(error);
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

async function runEveryClassifier() {
  const classifiers = state.models.filter((m) => m.loaded && m.manifest?.tasks?.includes("classify")
    && m.manifest.label_space === "imagenet-1k");
  for (const model of classifiers) await run(model.name, "");
}

async function loadServerFacts() {
  try {
    const listing = await getJson("/v1/models");
    state.models = listing.models;
    const table = await getJson("/v1/tradeoffs").catch(() => null);
    state.auto = table?.auto ?? null;
    if (state.auto?.default_budget_ms) $("budget").value = state.auto.default_budget_ms;
    if (table) renderTradeoffs($("tradeoffs"), table);
    fillModels();
    showError(null);
    $("key-status").textContent = apiKey() ? "key in use" : "";
    document.body.dataset.ready = "true";
  } catch (error) {
    showError(error);
  }
}

function wire() {
  wireImageInput({ drop: $("drop"), fileInput: $("file"), gallery: $("gallery"), onImage: setImage });
  $("second-sample").replaceChildren(...SAMPLES.map((s) => el("option", { value: s.file, text: s.alt })));
  $("second-sample").value = SAMPLES[2].file;
  for (const radio of document.querySelectorAll("input[name=task]")) {
    radio.addEventListener("change", () => {
      clearOverlays();
      $("result").replaceChildren();
      $("timing").replaceChildren();
      fillModels();
    });
  }
  $("model").addEventListener("change", fillResolutions);
  $("task-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(async () => renderTiming($("timing"), await run()));
  });
  $("run-all").addEventListener("click", () => guarded(runEveryClassifier));
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey($("api-key").value.trim());
    $("api-key").value = "";
    loadServerFacts();
  });
  $("forget-key").addEventListener("click", () => {
    setApiKey("");
    $("key-status").textContent = "no key";
  });
}

wire();
loadServerFacts();
