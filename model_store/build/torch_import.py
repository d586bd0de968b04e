"""A user's torchvision MobileNetV2 checkpoint (.pth/.pt) as an ONNX graph, through the store's own exporter.

The checkpoint is a state dict (or a dict holding one under "state_dict" or "model"; a "module." prefix
from DataParallel is dropped) of torchvision's `mobilenet_v2`, typically with a replaced classifier. Its
number of classes comes from `classifier.1.weight` and its width multiplier from the channels of the last
inverted residual block; it is loaded strictly into torchvision_v2.py's MobileNetV2 and exported as the
store's torchvision variant is, with the outputs logits, embedding and features_s8/16/32 and any N, H and
W. onnx_import.py then treats the graph as it treats any ONNX model. Needs the `torch` extra.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from .onnx_import import ImportProblem
from .torchvision_v2 import MobileNetV2, MobileNetV2Outputs, export_onnx

CLASSIFIER = "classifier.1.weight"
# The last inverted residual block's projection: make_divisible(320 * width multiplier) output channels.
LAST_BLOCK = "features.17.conv.2.weight"
LAST_BLOCK_CHANNELS = 320
NATIVE_RESOLUTION = 224  # torchvision's ImageNet training and evaluation size
SHOWN_KEYS = 4


@dataclass(frozen=True)
class Converted:
    model: onnx.ModelProto
    width_mult: float
    classes: int


def from_checkpoint(path: Path) -> Converted:
    state = _state_dict(path)
    expected = MobileNetV2().state_dict()  # the same keys at every width and number of classes
    for key in expected:
        # Checkpoints of torch before 0.4.1 lack the counter; eval mode never reads it.
        if (
            key.endswith(".num_batches_tracked")
            and key not in state
            and key.replace("num_batches_tracked", "weight") in state
        ):
            state[key] = torch.tensor(0)
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        problems = [
            f"{word} {_some(keys)}" for word, keys in (("missing", missing), ("unexpected", unexpected)) if keys
        ]
        raise ImportProblem(f"{path} is not a torchvision MobileNetV2 checkpoint: {'; '.join(problems)}")
    # A scalar where a weight should be is left to the shape check below.
    classes = int(state[CLASSIFIER].shape[0]) if state[CLASSIFIER].dim() else 1000
    width = round(int(state[LAST_BLOCK].shape[0]) / LAST_BLOCK_CHANNELS, 4) if state[LAST_BLOCK].dim() else 1.0
    net = MobileNetV2(classes, width)
    shapes = net.state_dict().items()
    wrong = [
        f"{key} {tuple(state[key].shape)}, expected {tuple(v.shape)}"
        for key, v in shapes
        if state[key].shape != v.shape
    ]
    if wrong:
        raise ImportProblem(
            f"{path}: the layers' shapes are not those of torchvision's MobileNetV2 at width multiplier {width} "
            f"(from {LAST_BLOCK}) with {classes} classes: {_some(wrong)}"
        )
    net.load_state_dict(state, strict=True)
    with torch.no_grad():
        model = export_onnx(MobileNetV2Outputs(net).eval())
    return Converted(model, width, classes)


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise ImportProblem(f"{path} is not a PyTorch checkpoint ({_first_sentence(exc)})") from exc
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        raise ImportProblem(
            f"{path} pickles objects other than tensors{f' ({found[1]})' if found else ''}, which "
            "torch.load(weights_only=True) does not run: save the model's state_dict(), not the model"
        ) from exc
    except Exception as exc:  # not a zip or a pickle, a truncated file: RuntimeError, KeyError, EOFError...
        raise ImportProblem(f"{path} is not a PyTorch checkpoint ({_first_sentence(exc)})") from exc
    if isinstance(loaded, dict) and not _all_tensors(loaded):
        loaded = next((loaded[key] for key in ("state_dict", "model") if isinstance(loaded.get(key), dict)), loaded)
    if not isinstance(loaded, dict) or not loaded or not _all_tensors(loaded):
        what = (
            f"a dict of {_some([repr(key) for key in loaded])}" if isinstance(loaded, dict) else type(loaded).__name__
        )
        raise ImportProblem(
            f"{path} holds no state dict (a dict of tensors, or one under 'state_dict' or 'model') but {what}"
        )
    return {key.removeprefix("module."): value for key, value in loaded.items()}


def _all_tensors(mapping: dict[object, object]) -> bool:
    return all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in mapping.items())


def _first_sentence(exc: Exception) -> str:
    text = str(exc).strip().split(". ")[0].splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _some(items: list[str]) -> str:
    more = len(items) - SHOWN_KEYS
    return ", ".join(items[:SHOWN_KEYS]) + (f", ... ({more} more)" if more > 0 else "")
