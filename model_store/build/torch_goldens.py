"""Golden outputs of the torch MobileNetV2 (the module that is exported) for the test images.

The tests run without torch, so they check the ONNX variants against this file. Rebuild with
`python -m model_store.build.torch_goldens` whenever the export or the test images change.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import torch

from model_store.build.golden_photos import PHOTOS
from model_store.build.reference_preprocess import torchvision_reference
from model_store.build.torchvision_v2 import FEATURE_TAPS, OUTPUT_NAMES, load_model

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "tests" / "data" / "images"
GOLDEN = REPO / "tests" / "data" / "golden" / "torchvision_v2.npz"


def photos(images_dir: Path) -> list[Path]:
    """The test photos; segmentation masks are label maps, not photos."""
    return [images_dir / name for name in PHOTOS]


def golden_arrays(images_dir: Path) -> dict[str, np.ndarray]:
    """`<image>/<output>` -> float32 array; feature maps reduced to per-channel means to stay small."""
    model = load_model()
    arrays: dict[str, np.ndarray] = {}
    for path in photos(images_dir):
        with torch.no_grad():
            outputs = model(torch.from_numpy(torchvision_reference(path)[None]))
        for name, output in zip(OUTPUT_NAMES, outputs, strict=True):
            value = output.numpy()[0]
            if name in FEATURE_TAPS:
                value = value.mean(axis=(1, 2), dtype=np.float64)
            arrays[f"{path.name}/{name}"] = value.astype(np.float32)
    return arrays


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez, but byte-identical across runs: fixed zip timestamps, no compression."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for key in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, arrays[key], allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(info, buffer.getvalue())


def build_goldens(images_dir: Path = IMAGES, out_path: Path = GOLDEN) -> None:
    save_npz(out_path, golden_arrays(images_dir))


if __name__ == "__main__":
    build_goldens()
