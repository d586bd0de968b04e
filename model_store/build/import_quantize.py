"""`mobilenet-serve import --quantize int8 --calibration DIR`: the imported fp32 entry made QDQ int8.

Calibrated on the user's images, preprocessed as the server will preprocess them, with the options
the store's own int8 variant was tuned with (quantize_int8.py). The summary says how often the int8
model's top class agrees with the fp32 one's on those images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader

from service.preprocess import PreprocessSpec, prepare
from service.runtime import INPUT_NAME, open_session

from .onnx_import import ImportProblem
from .quantize_int8 import quantize

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class Quantized:
    model: onnx.ModelProto
    images: int
    top1_agree: int  # of `images`


class _Reader(CalibrationDataReader):
    def __init__(self, tensors: list[np.ndarray]) -> None:
        self._feeds = iter([{INPUT_NAME: tensor[None]} for tensor in tensors])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def calibration_images(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise ImportProblem(f"--calibration {directory} is not a directory")
    images = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ImportProblem(f"--calibration {directory} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return images


def quantize_entry(fp32_path: Path, images: list[Path], spec: PreprocessSpec, resolution: int) -> Quantized:
    """The int8 model of the entry at `fp32_path`, and how its top class compares with fp32's on `images`."""
    try:
        tensors = [prepare(path.read_bytes(), spec, resolution, MAX_PIXELS).tensor for path in images]
    except Exception as exc:
        raise ImportProblem(f"a calibration image cannot be read: {exc}") from exc
    ort.set_default_logger_severity(3)  # the calibration sessions' notes on initializers they drop are noise here
    model = quantize(fp32_path, _Reader(tensors))
    batch = np.stack(tensors)
    fp32 = open_session(fp32_path, 1).run(["logits"], {INPUT_NAME: batch})[0]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    int8 = session.run(["logits"], {INPUT_NAME: batch})[0]
    return Quantized(model, len(images), int((fp32.argmax(1) == int8.argmax(1)).sum()))
