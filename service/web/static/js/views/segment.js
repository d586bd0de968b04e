// Segment: the class mask as a translucent overlay (background left clear) and a legend of the classes in it.

import { el } from "../dom.js";

// The mask's pixel values are PASCAL VOC class ids (label_space "pascal-voc"), coloured with VOC's palette.
const VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
  "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"];

function vocColor(id) {
  let [r, g, b] = [0, 0, 0];
  for (let shift = 7, c = id; c; shift -= 1, c >>= 3) {
    r |= (c & 1) << shift;
    g |= ((c >> 1) & 1) << shift;
    b |= ((c >> 2) & 1) << shift;
  }
  return [r, g, b];
}

const BY_COLOR = new Map(VOC_CLASSES.map((name, id) => [vocColor(id).join(","), id]));

async function readMask(blob) {
  const bitmap = await createImageBitmap(blob);
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0);
  return { canvas, context, pixels: context.getImageData(0, 0, canvas.width, canvas.height) };
}

export async function renderMask(container, overlay, blob, answer) {
  const { canvas, context, pixels } = await readMask(blob);
  const counts = new Map();
  const data = pixels.data;
  for (let i = 0; i < data.length; i += 4) {
    const id = BY_COLOR.get(`${data[i]},${data[i + 1]},${data[i + 2]}`) ?? 0;
    counts.set(id, (counts.get(id) ?? 0) + 1);
    data[i + 3] = id === 0 ? 0 : 255;
  }
  context.putImageData(pixels, 0, 0);
  overlay.src = canvas.toDataURL("image/png");
  const present = [...counts.entries()].filter(([id]) => id !== 0).sort((a, b) => b[1] - a[1]);
  const total = data.length / 4;
  const names = present.map(([id]) => VOC_CLASSES[id]);
  overlay.alt = present.length ? `Segmentation mask showing ${names.join(", ")}` : "Segmentation mask: background only";
  overlay.hidden = false;
  const legend = el("ul", { class: "legend", "aria-label": "Classes in the mask" },
    ...present.map(([id, count]) => el("li", { "data-class": VOC_CLASSES[id] },
      el("span", { class: "swatch", style: { background: `rgb(${vocColor(id).join(",")})` } }),
      ` ${VOC_CLASSES[id]} (${((100 * count) / total).toFixed(1)}% of the image)`)));
  container.replaceChildren(
    el("p", { text: `${answer.model} at ${answer.resolution}px: mask of ${canvas.width}×${canvas.height}` }),
    present.length ? legend : el("p", { text: "Only background was found." }),
  );
}
