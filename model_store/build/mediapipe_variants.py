"""The store's variants built from Google MediaPipe's TFLite models (Apache-2.0): BlazeFace and selfie segmentation.

The graphs are float with fp16 weights (the full-range detector's also sparse); tflite_to_onnx.py converts
them like the quantized ones. The detectors' manifests carry MediaPipe's own anchor, decoding and
suppression options, so the service builds the anchors and decodes the boxes from the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import tflite_reader
from .manifest import SOURCES, write_variant
from .onnx_builder import OnnxBuilder
from .tflite_to_onnx import finish, import_graph

ORIGIN = (
    "Google MediaPipe, the PyPI wheel mediapipe==0.10.21 (cp311, manylinux x86_64), folder mediapipe/modules/, "
    "unchanged; Apache-2.0"
)
GRAPHS = "MediaPipe v0.10.21 mediapipe/modules/face_detection/{name}.pbtxt and face_detection.pbtxt"
# ImageToTensorCalculator in MediaPipe's graphs: the detectors keep the aspect ratio (letterbox, zero border)
# into [-1, 1]; the segmenter stretches the whole image into [0, 1]. Both sample as OpenCV's warp does
# (service/preprocess.py, mediapipe_warp), so the filter is that of its bilinear warp.
DETECTOR_PREPROCESS = {
    "crop": "letterbox",
    "crop_fraction": 1.0,
    "resize_filter": "bilinear",
    "mean": [127.5, 127.5, 127.5],
    "std": [127.5, 127.5, 127.5],
    "layout": "NCHW",
    "color": "RGB",
}
SEGMENTER_PREPROCESS = {**DETECTOR_PREPROCESS, "crop": "stretch", "mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0]}
# MediaPipe's FaceKeyPoint order.
FACE_KEYPOINTS = ["right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion"]


def detector_options(size: int, boxes: int, strides: list[int], interpolated: float, min_score: float) -> dict:
    """The options of SsdAnchorsCalculator, TensorsToDetectionsCalculator and NonMaxSuppressionCalculator, as set."""
    return {
        "anchors": {
            "num_layers": len(strides),
            "min_scale": 0.1484375,
            "max_scale": 0.75,
            "input_size_height": size,
            "input_size_width": size,
            "anchor_offset_x": 0.5,
            "anchor_offset_y": 0.5,
            "strides": strides,
            "aspect_ratios": [1.0],
            "fixed_anchor_size": True,
            "interpolated_scale_aspect_ratio": interpolated,
            "reduce_boxes_in_lowest_layer": False,
        },
        "decode": {
            "num_boxes": boxes,
            "num_coords": 16,
            "box_coord_offset": 0,
            "keypoint_coord_offset": 4,
            "num_keypoints": 6,
            "num_values_per_keypoint": 2,
            "sigmoid_score": True,
            "score_clipping_thresh": 100.0,
            "reverse_output_order": True,
            "x_scale": float(size),
            "y_scale": float(size),
            "w_scale": float(size),
            "h_scale": float(size),
            "min_score_thresh": min_score,
        },
        "nms": {"min_suppression_threshold": 0.3, "overlap_type": "INTERSECTION_OVER_UNION", "algorithm": "WEIGHTED"},
        "keypoints": FACE_KEYPOINTS,
    }


@dataclass(frozen=True)
class MediapipeVariant:
    name: str
    source: str
    resolution: int
    task: str
    labels: tuple[str, ...]
    label_space: str
    preprocess: dict
    outputs: dict[str, str]  # ONNX output name -> TFLite output tensor name
    extra: dict[str, Any] = field(default_factory=dict)


VARIANTS = (
    MediapipeVariant(
        "blazeface_short_range", "face_detection_short_range.tflite", 128, "face_detect", ("face",), "face",
        DETECTOR_PREPROCESS, {"regressors": "regressors", "classificators": "classificators"},
        {"detector": {**detector_options(128, 896, [8, 16, 16, 16], 1.0, 0.5),
                      "source": GRAPHS.format(name="face_detection_short_range")}},
    ),
    MediapipeVariant(
        "blazeface_full_range", "face_detection_full_range_sparse.tflite", 192, "face_detect", ("face",), "face",
        DETECTOR_PREPROCESS, {"regressors": "Identity", "classificators": "Identity_1"},
        {"detector": {**detector_options(192, 2304, [4], 0.0, 0.6),
                      "source": GRAPHS.format(name="face_detection_full_range")}},
    ),
    MediapipeVariant(
        "selfie_segmentation", "selfie_segmentation.tflite", 256, "person_segment", ("background", "person"),
        "person", SEGMENTER_PREPROCESS, {"person_probability": "activation_10"},
    ),
)  # fmt: skip


def convert(variant: MediapipeVariant):
    builder = OnnxBuilder()
    graph = tflite_reader.read(SOURCES / variant.source)
    imported = import_graph(builder, graph, "a_", "image")
    outputs = {}
    for out_name, tensor_name in variant.outputs.items():
        tensor = graph.by_name(tensor_name)
        dims = ["N", *tensor.shape[1:]] if len(tensor.shape) == 3 else ["N", tensor.shape[3], "H", "W"]
        outputs[out_name] = (imported.values[tensor.index], dims)
    return finish(builder, variant.name, "image", outputs)


def build(store_dir: Path, names: set[str] | None = None) -> None:
    for variant in VARIANTS:
        if names and variant.name not in names:
            continue
        write_variant(
            store_dir / variant.name,
            convert(variant),
            {
                "family": "mediapipe",
                "alpha": 1.0,
                "native_resolution": variant.resolution,
                "resolutions": [variant.resolution],
                "tasks": [variant.task],
                "precision": "fp16",
                "label_space": variant.label_space,
                "embedding_dim": None,
                "feature_strides": None,
                "preprocess": variant.preprocess,
                **variant.extra,
                "published": None,
            },
            list(variant.labels),
            source_file=variant.source,
            license_name="Apache-2.0",
            origin=ORIGIN,
        )
        print(f"built {variant.name}")
