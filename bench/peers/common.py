"""The model work every peer shares: load the ONNX session, preprocess a JPEG, turn logits into top-5 JSON.

Every peer server imports this module and nothing else of the project, so the peers differ only in the
serving framework around these calls. The math mirrors `service/preprocess.py` and `service/postprocess.py`
(same Pillow calls, same float32 arithmetic) without importing them: the peers run from their own venv.
"""

from __future__ import annotations

import io
import json
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
TOP_K = 5
# Decode big JPEGs at 1/2, 1/4 or 1/8 scale while keeping twice the pixels the resize needs: the
# product's trade-off (Pillow's thumbnail() reducing_gap), so both pay the same decode cost.
REDUCING_GAP = 2.0
VARIANT_ENV = "PEER_VARIANT_DIR"
THREADS_ENV = "PEER_INTRA_OP_THREADS"
SPINNING_ENV = "PEER_ORT_ALLOW_SPINNING"


@dataclass(frozen=True)
class Model:
    name: str
    session: ort.InferenceSession
    manifest: dict[str, Any]
    labels: tuple[str, ...]
    resolution: int

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits [N, 1000] for a float32 [N, 3, H, W] batch."""
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})
        return logits


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def intra_op_threads(replicas: int = 1) -> int:
    """ONNX Runtime's own default is one thread per core; replicas split the cores instead of oversubscribing."""
    explicit = os.environ.get(THREADS_ENV)
    if explicit:
        return max(1, int(explicit))
    return max(1, cpu_cores() // max(1, replicas))


def variant_dir_from_env() -> Path:
    value = os.environ.get(VARIANT_ENV)
    if not value:
        raise RuntimeError(f"set {VARIANT_ENV} to the model_store/<variant> directory to serve")
    return Path(value)


def load_session(variant_dir: Path | str, threads: int | None = None) -> Model:
    """The variant's classifier; ORT options are its defaults apart from the thread count."""
    variant_dir = Path(variant_dir)
    manifest = json.loads((variant_dir / "manifest.json").read_text())
    labels = tuple((variant_dir / manifest.get("labels", "labels.txt")).read_text().splitlines())
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads if threads is not None else intra_op_threads()
    if u8s8_saturates():
        # The service's setting on this CPU (service/runtime.py), so that every target computes the same numbers.
        options.add_session_config_entry("session.x64quantprecision", "1")
    spinning = os.environ.get(SPINNING_ENV)
    if spinning is not None:
        # ORT's intra-op threads spin after each run by default; "0" frees those cores for the framework.
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(variant_dir / manifest.get("onnx", "model.onnx")), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return Model(manifest["name"], session, manifest, labels, int(manifest["native_resolution"]))


def u8s8_saturates() -> bool:
    """An x86 CPU without VNNI, where ONNX Runtime's uint8 x int8 kernels saturate (as service/runtime.py)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True
    lines = [line for line in cpuinfo.splitlines() if line.startswith("flags")]
    flags = {flag for line in lines for flag in line.partition(":")[2].split()}
    return not flags & {"avx512_vnni", "avx_vnni"}


def preprocess(data: bytes, manifest: dict[str, Any]) -> np.ndarray:
    """float32 [3, H, W] at the manifest's native resolution."""
    spec = manifest["preprocess"]
    resolution = int(manifest["native_resolution"])
    opened = Image.open(io.BytesIO(data))
    if opened.format in ("JPEG", "MPO"):
        opened.draft(opened.mode, (_decode_size(spec, resolution),) * 2)
    image: Image.Image = ImageOps.exif_transpose(opened) or opened
    if image.mode != "RGB":
        image = image.convert("RGB")
    if spec["crop"] in ("letterbox", "stretch"):
        return normalize(np.asarray(_mediapipe_warp(image, resolution, spec["crop"] == "letterbox")), spec)
    box = crop_box(image.size, spec, resolution)
    # One resize call with a source box crops and scales together, as the product does.
    resized = image.resize((resolution, resolution), Image.Resampling.BILINEAR, box=box)
    return normalize(np.asarray(resized), spec)


def _mediapipe_warp(image: Image.Image, resolution: int, keep_aspect: bool) -> Image.Image:
    """MediaPipe's ImageToTensorCalculator: OpenCV's bilinear warp of the whole image onto the square (letterbox
    with a black border, or stretched), pixel centres at their index, no smoothing."""
    width, height = image.size
    if keep_aspect:
        side = max(width, height)
        scale_x = scale_y = side / resolution
        corner_x, corner_y = (width - side) / 2, (height - side) / 2
    else:
        scale_x, scale_y = width / resolution, height / resolution
        corner_x = corner_y = 0.0
    data = (scale_x, 0.0, corner_x + 0.5 - scale_x / 2, 0.0, scale_y, corner_y + 0.5 - scale_y / 2)
    return image.transform(
        (resolution, resolution), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0)
    )


def _decode_size(spec: dict[str, Any], resolution: int) -> int:
    needed = (
        resolution
        if spec["crop"] in ("none", "letterbox", "stretch")
        else math.ceil(resolution / spec["crop_fraction"])
    )
    return math.ceil(needed * REDUCING_GAP)


def crop_box(size: tuple[int, int], spec: dict[str, Any], resolution: int) -> tuple[float, float, float, float] | None:
    width, height = size
    crop, fraction = spec["crop"], float(spec["crop_fraction"])
    if crop in ("none", "letterbox", "stretch") or (crop == "central_fraction" and fraction >= 1.0):
        return None
    if crop == "central_fraction":
        # tf.image.central_crop's integer arithmetic (TF-slim evaluation).
        offset = int(1 / ((1 - fraction) / 2.0))
        top, left = int(height / offset), int(width / offset)
        return (left, top, width - left, height - top)
    # torchvision: Resize(int(res / fraction)) on the shorter side, then CenterCrop(res), as a source box.
    shorter = int(resolution / fraction + 1e-6)
    if width <= height:
        new_w, new_h = shorter, int(shorter * height / width)
    else:
        new_w, new_h = int(shorter * width / height), shorter
    left = round((new_w - resolution) / 2.0)
    top = round((new_h - resolution) / 2.0)
    sx, sy = width / new_w, height / new_h
    return (left * sx, top * sy, (left + resolution) * sx, (top + resolution) * sy)


def normalize(pixels: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """(x - mean) / std on 0..255 values, written as x * (1/std) + (-mean/std) so it matches the product bit for bit."""
    std = np.asarray(spec["std"], dtype=np.float32)
    scale = (1.0 / std)[:, None, None]
    bias = (-np.asarray(spec["mean"], dtype=np.float32) / std)[:, None, None]
    out = np.empty((3, pixels.shape[0], pixels.shape[1]), dtype=np.float32)
    np.multiply(pixels.transpose(2, 0, 1), scale, out=out)
    out += bias
    return out


def postprocess(logits_row: np.ndarray, labels: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Softmax over one image's logits and its top-5 classes, best first."""
    shifted = logits_row.astype(np.float64) - np.max(logits_row)
    probs = np.exp(shifted)
    probs /= probs.sum()
    ids = np.argpartition(-probs, TOP_K - 1)[:TOP_K]
    ids = ids[np.argsort(-probs[ids], kind="stable")]
    return {"predictions": [{"class_id": int(i), "label": labels[i], "score": float(probs[i])} for i in ids]}


def response_body(model: Model, result: dict[str, Any]) -> dict[str, Any]:
    """The product's /classify answer for one image, so every target sends back the same JSON."""
    return {"model": model.name, "resolution": model.resolution, "results": [result]}


def classify_batch(model: Model, tensors: list[np.ndarray]) -> list[dict[str, Any]]:
    """One ORT run over the stacked tensors, one response body per image."""
    logits = model.run(np.stack(tensors))
    return [response_body(model, postprocess(row, model.labels)) for row in logits]
