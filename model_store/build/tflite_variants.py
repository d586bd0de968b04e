"""The store's variants built from the Coral TFLite MobileNets (Apache-2.0)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import tflite_reader
from .manifest import SOURCES, copy_labels, write_variant
from .onnx_builder import OnnxBuilder
from .tflite_to_onnx import feature_maps, finish, flatten, import_graph, slice_classes

ORIGIN = "Coral project test data (google-coral/test_data), Apache-2.0"
SLIM_V1 = "tensorflow/models research/slim/nets/mobilenet_v1.md, 2018_08_02 quantized checkpoints (published)"
# TF-slim evaluation: central 87.5% crop, bilinear resize, x / 127.5 - 1.
SLIM_PREPROCESS = {
    "crop": "central_fraction",
    "crop_fraction": 0.875,
    "resize_filter": "bilinear",
    "mean": [127.5, 127.5, 127.5],
    "std": [127.5, 127.5, 127.5],
    "layout": "NCHW",
    "color": "RGB",
}
# DeepLab's eval resizes the whole image to the crop size and keeps the same scaling.
DEEPLAB_PREPROCESS = {**SLIM_PREPROCESS, "crop": "none", "crop_fraction": 1.0}
CLASSIFIER_RESOLUTIONS = [128, 160, 192, 224]
STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class TfliteVariant:
    name: str
    sources: tuple[str, ...]
    family: str
    alpha: float
    resolution: int
    labels: str
    label_space: str
    published: dict | None = None

    @property
    def imagenet(self) -> bool:
        return self.label_space == "imagenet-1k"


VARIANTS = (
    TfliteVariant(
        "mobilenet_v1_1.0_224",
        ("mobilenet_v1_1.0_224_quant_embedding_extractor.tflite", "mobilenet_v1_1.0_224_quant_head_layers.tflite"),
        "v1", 1.0, 224, "imagenet_labels.txt", "imagenet-1k",
        {"top1": 70.1, "top5": 88.9, "source": SLIM_V1},
    ),
    TfliteVariant(
        "mobilenet_v1_0.75_192", ("mobilenet_v1_0.75_192_quant.tflite",), "v1", 0.75, 192,
        "imagenet_labels.txt", "imagenet-1k", {"top1": 66.1, "top5": 86.4, "source": SLIM_V1},
    ),
    TfliteVariant(
        "mobilenet_v1_0.5_160", ("mobilenet_v1_0.5_160_quant.tflite",), "v1", 0.5, 160,
        "imagenet_labels.txt", "imagenet-1k", {"top1": 57.7, "top5": 80.4, "source": SLIM_V1},
    ),
    TfliteVariant(
        "mobilenet_v1_0.25_128", ("mobilenet_v1_0.25_128_quant.tflite",), "v1", 0.25, 128,
        "imagenet_labels.txt", "imagenet-1k", {"top1": 39.5, "top5": 64.4, "source": SLIM_V1},
    ),
    TfliteVariant(
        "mobilenet_v2_1.0_224", ("mobilenet_v2_1.0_224_quant.tflite",), "v2", 1.0, 224,
        "imagenet_labels.txt", "imagenet-1k",
    ),
    TfliteVariant(
        "mobilenet_v2_1.0_224_ptq", ("tf2_mobilenet_v2_1.0_224_ptq.tflite",), "v2", 1.0, 224,
        "imagenet_labels.txt", "imagenet-1k",
    ),
    TfliteVariant(
        "inat_birds_v2_1.0_224", ("mobilenet_v2_1.0_224_inat_bird_quant.tflite",), "v2", 1.0, 224,
        "inat_bird_labels.txt", "inat-birds",
    ),
    TfliteVariant(
        "inat_insects_v2_1.0_224", ("mobilenet_v2_1.0_224_inat_insect_quant.tflite",), "v2", 1.0, 224,
        "inat_insect_labels.txt", "inat-insects",
    ),
    TfliteVariant(
        "deeplabv3_mnv2_pascal", ("deeplabv3_mnv2_pascal_quant.tflite",), "deeplab", 1.0, 513,
        "pascal_voc_segmentation_labels.txt", "pascal-voc",
    ),
    TfliteVariant(
        "deeplabv3_mnv2_dm05_pascal", ("deeplabv3_mnv2_dm05_pascal_quant.tflite",), "deeplab", 0.5, 513,
        "pascal_voc_segmentation_labels.txt", "pascal-voc",
    ),
)


def _labels(variant: TfliteVariant) -> list[str]:
    lines = copy_labels(variant.labels)
    if variant.imagenet:
        return lines[1:1001]
    if variant.label_space == "pascal-voc":
        # The file ends with a note about the ignore label 255; the classes are the first 21 lines.
        return lines[:21]
    return lines


def convert(variant: TfliteVariant):
    """The ONNX model and the manifest facts that depend on its graph."""
    builder = OnnxBuilder()
    image = "image"
    imported = import_graph(builder, tflite_reader.read(SOURCES / variant.sources[0]), "a_", image)
    backbone = imported
    for index, extra in enumerate(variant.sources[1:], start=1):
        graph = tflite_reader.read(SOURCES / extra)
        # The next piece's input is the previous piece's output tensor of the same name.
        previous = tflite_reader.read(SOURCES / variant.sources[index - 1])
        out_name = previous.tensors[previous.outputs[0]].name
        feed = {i: imported.head for i in graph.inputs if graph.tensors[i].name == out_name}
        pooled, pooled_dim = imported.head, previous.tensors[previous.outputs[0]].shape[-1]
        imported = import_graph(builder, graph, f"{chr(ord('a') + index)}_", image, feed)
        if imported.pooled is None:
            imported.pooled, imported.pooled_dim = pooled, pooled_dim
    if variant.family == "deeplab":
        outputs = {"seg_logits": (imported.head, ["N", 21, "H", "W"])}
        facts = {
            "tasks": ["segment"],
            "resolutions": [257, 321, 385, 449, 513],
            "embedding_dim": None,
            "feature_strides": None,
            "preprocess": DEEPLAB_PREPROCESS,
        }
        return finish(builder, variant.name, image, outputs), facts
    labels = len(_labels(variant))
    logits = imported.head
    if variant.imagenet:
        logits = slice_classes(builder, logits, 1, 1001)
    embedding = flatten(builder, imported.pooled, "embedding_flat")
    maps = feature_maps(backbone, variant.resolution, STRIDES)
    outputs = {
        "logits": (logits, ["N", labels]),
        "embedding": (embedding, ["N", imported.pooled_dim]),
        **{f"features_s{s}": (value, ["N", c, None, None]) for s, (value, c) in maps.items()},
    }
    facts = {
        "tasks": ["classify", "embed", "backbone"],
        "resolutions": sorted({*CLASSIFIER_RESOLUTIONS, variant.resolution}),
        "embedding_dim": imported.pooled_dim,
        "feature_strides": {str(s): c for s, (_, c) in maps.items()},
        "preprocess": SLIM_PREPROCESS,
    }
    return finish(builder, variant.name, image, outputs), facts


def build(store_dir: Path, names: set[str] | None = None) -> None:
    for variant in VARIANTS:
        if names and variant.name not in names:
            continue
        model, facts = convert(variant)
        write_variant(
            store_dir / variant.name,
            model,
            {
                "family": variant.family,
                "alpha": variant.alpha,
                "native_resolution": variant.resolution,
                "precision": "int8",
                "label_space": variant.label_space,
                **facts,
                "published": variant.published,
            },
            _labels(variant),
            source_file=variant.sources,
            license_name="Apache-2.0",
            origin=ORIGIN,
        )
        print(f"built {variant.name}")


if __name__ == "__main__":
    build(Path(__file__).resolve().parent.parent)
