// Where the image comes from: a dropped, picked or pasted file, or a sample photo shipped with the page.

export const SAMPLES = [
  { file: "parrot.jpg", alt: "A blue and yellow macaw perched on a branch" },
  { file: "pets.jpg", alt: "Two dogs lying on a lawn" },
  { file: "cat_720p.jpg", alt: "A tabby cat" },
  { file: "hot_dog.jpg", alt: "A hot dog in a bun" },
  { file: "owl.jpg", alt: "An owl" },
];

export async function sampleImage(file) {
  const response = await fetch(`/ui/samples/${file}`);
  const blob = await response.blob();
  return new File([blob], file, { type: blob.type || "image/jpeg" });
}

// Calls `onImage(file, description)` for every way a person can give an image.
export function wireImageInput({ drop, fileInput, gallery, onImage }) {
  fileInput.addEventListener("change", () => {
    if (fileInput.files.length) onImage(fileInput.files[0], fileInput.files[0].name);
  });
  drop.addEventListener("keydown", (event) => {
    if (event.target === drop && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      fileInput.click();
    }
  });
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("dragging");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("dragging");
    const file = [...event.dataTransfer.files].find((f) => f.type.startsWith("image/")) ?? event.dataTransfer.files[0];
    if (file) onImage(file, file.name);
  });
  document.addEventListener("paste", (event) => {
    const item = [...event.clipboardData.items].find((i) => i.kind === "file" && i.type.startsWith("image/"));
    if (item) onImage(item.getAsFile(), "pasted image");
  });
  for (const sample of SAMPLES) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.sample = sample.file;
    button.title = sample.alt;
    const thumb = document.createElement("img");
    thumb.src = `/ui/samples/${sample.file}`;
    thumb.alt = sample.alt;
    button.append(thumb);
    button.addEventListener("click", async () => onImage(await sampleImage(sample.file), sample.alt));
    const item = document.createElement("li");
    item.append(button);
    gallery.append(item);
  }
}
