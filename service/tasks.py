"""One table of the tasks the service offers: what each runs, which model serves it, how its answer is encoded.

Adding a task is one `Task` entry and its encoder (in postprocess.py). The REST routes, the V2
protocol's outputs, the store's manifest check, the warm-up runs and the default models all read
this table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .postprocess import Encoded, encode_backbone, encode_classify, encode_detect, encode_embed, encode_segment
from .postprocess_people import encode_face_detect, encode_person_segment

if TYPE_CHECKING:
    from .store import Variant

log = logging.getLogger("mobilenet_serve.registry")

IMAGENET = "imagenet-1k"


@dataclass(frozen=True)
class OutputSpec:
    """One output of the V2 protocol: its shape without the batch dimension (-1 where it varies), its source."""

    shape: tuple[int, ...]
    source: str  # the ONNX Runtime output it is computed from


@dataclass(frozen=True)
class DefaultRule:
    """How the model a task uses when a request names none is chosen among the loaded ones."""

    needs: str
    label_space: str | None
    preferred: str | None  # taken when loaded; None: the setting `default_model`


@dataclass(frozen=True)
class Task:
    name: str
    needs: str  # the manifest task a variant must list to serve it
    outputs: tuple[str, ...]  # ONNX Runtime outputs, in the order the encoder reads them
    default: str  # key of DEFAULTS
    encode: Callable[..., Encoded]  # (Answer, **the endpoint's options)
    # Encoders that work on whole images (regions, masks, .npz) run in the codec pool, off the event loop.
    encode_off_loop: bool = False
    max_images: int | None = None
    v2_outputs: Callable[[Variant], dict[str, OutputSpec]] | None = None
    endpoint: str | None = None  # the REST route that serves it, where it is not the task's own name

    @property
    def route(self) -> str:
        return self.endpoint or self.name


def image_size(variant: Variant) -> int:
    """The input's height and width as the V2 metadata states it: -1 where the variant takes several."""
    return variant.resolutions[0] if len(variant.resolutions) == 1 else -1


def _classify_outputs(variant: Variant) -> dict[str, OutputSpec]:
    classes = (len(variant.labels),)
    return {"logits": OutputSpec(classes, "logits"), PROBABILITIES: OutputSpec(classes, "logits")}


def _embed_outputs(variant: Variant) -> dict[str, OutputSpec]:
    return {"embedding": OutputSpec((variant.embedding_dim or -1,), "embedding")}


def _backbone_outputs(variant: Variant) -> dict[str, OutputSpec]:
    strides = sorted((variant.feature_strides or {}).items(), key=lambda item: int(item[0]))
    return {f"features_s{s}": OutputSpec((channels, -1, -1), f"features_s{s}") for s, channels in strides}


def _segment_outputs(variant: Variant) -> dict[str, OutputSpec]:
    size = image_size(variant)
    return {"seg_logits": OutputSpec((len(variant.labels), size, size), "seg_logits")}


def _face_outputs(variant: Variant) -> dict[str, OutputSpec]:
    boxes = variant.detector.decode.num_boxes if variant.detector is not None else -1
    coords = variant.detector.decode.num_coords if variant.detector is not None else -1
    return {
        "regressors": OutputSpec((boxes, coords), "regressors"),
        "classificators": OutputSpec((boxes, 1), "classificators"),
    }


def _person_outputs(variant: Variant) -> dict[str, OutputSpec]:
    size = image_size(variant)
    return {"person_probability": OutputSpec((1, size, size), "person_probability")}


PROBABILITIES = "probabilities"
DEFAULTS = {
    "default_model": DefaultRule(needs="classify", label_space=IMAGENET, preferred=None),
    "default_segmentation_model": DefaultRule(needs="segment", label_space=None, preferred="deeplabv3_mnv2_pascal"),
    "default_face_detection_model": DefaultRule(
        needs="face_detect", label_space=None, preferred="blazeface_short_range"
    ),
    "default_person_segmentation_model": DefaultRule(
        needs="person_segment", label_space=None, preferred="selfie_segmentation"
    ),
}
TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("classify", "classify", ("logits",), "default_model", encode_classify, v2_outputs=_classify_outputs),
        Task("embed", "embed", ("embedding",), "default_model", encode_embed, v2_outputs=_embed_outputs),
        Task(
            "backbone", "backbone", ("features_s8", "features_s16", "features_s32"), "default_model",
            encode_backbone, encode_off_loop=True, v2_outputs=_backbone_outputs,
        ),
        Task("detect", "segment", ("seg_logits",), "default_segmentation_model", encode_detect, encode_off_loop=True),
        Task(
            "segment", "segment", ("seg_logits",), "default_segmentation_model",
            encode_segment, encode_off_loop=True, max_images=1, v2_outputs=_segment_outputs,
        ),
        Task(
            "face_detect", "face_detect", ("regressors", "classificators"), "default_face_detection_model",
            encode_face_detect, v2_outputs=_face_outputs, endpoint="detect",
        ),
        Task(
            "person_segment", "person_segment", ("person_probability",), "default_person_segmentation_model",
            encode_person_segment, encode_off_loop=True, max_images=1, v2_outputs=_person_outputs, endpoint="segment",
        ),
    )
}  # fmt: skip
# The tasks a manifest may list: the ones that name their own outputs.
MANIFEST_TASKS = frozenset(task.needs for task in TASKS.values())
# Every ONNX Runtime output in one fixed order, so that V2 requests batch with the REST requests that ask for the same.
OUTPUT_ORDER = tuple(dict.fromkeys(name for task in TASKS.values() for name in task.outputs))


def endpoint_tasks(endpoint: str) -> tuple[Task, ...]:
    """The tasks a REST route serves, its own first (the one a request naming no model gets)."""
    return tuple(task for task in TASKS.values() if task.route == endpoint)


def default_task(endpoint: str, defaults: dict[str, str | None]) -> Task:
    """The task a request to `endpoint` naming no model runs: the first of the route's tasks with a default model."""
    tasks = endpoint_tasks(endpoint)
    return next((task for task in tasks if defaults.get(task.default) is not None), tasks[0])


def task_for(endpoint: str, variant: Variant) -> Task:
    """The task of `endpoint` that `variant` offers; the route's own when it offers none (the caller refuses it)."""
    tasks = endpoint_tasks(endpoint)
    return next((task for task in tasks if task.needs in variant.tasks), tasks[0])


def outputs_for(manifest_task: str) -> tuple[str, ...]:
    """The ONNX Runtime outputs of a task a manifest lists."""
    return TASKS[manifest_task].outputs


def v2_outputs(variant: Variant) -> dict[str, OutputSpec]:
    """Every V2 output the variant offers, in the table's order."""
    specs: dict[str, OutputSpec] = {}
    for task in TASKS.values():
        if task.v2_outputs is not None and task.needs in variant.tasks:
            specs.update(task.v2_outputs(variant))
    return specs


def choose_defaults(loaded: list[Variant], default_model: str) -> dict[str, str | None]:
    """The model each of DEFAULTS' rules names among the loaded variants (in store order), None where none fits."""
    names = [variant.name for variant in loaded]
    defaults: dict[str, str | None] = {}
    for key, rule in DEFAULTS.items():
        preferred = rule.preferred or default_model
        if preferred in names:
            defaults[key] = preferred
            continue
        fitting = [
            v.name
            for v in loaded
            if rule.needs in v.tasks and (rule.label_space is None or v.label_space == rule.label_space)
        ]
        defaults[key] = fitting[0] if fitting else None
        if rule.preferred is None:
            log.warning("default model %s is not loaded; using %s instead", preferred, defaults[key])
    return defaults
