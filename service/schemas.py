"""Response shapes, declared for /docs; handlers build the same shapes directly for speed."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Prediction(BaseModel):
    class_id: int = Field(examples=[281])
    label: str = Field(examples=["tabby, tabby cat"])
    score: float = Field(description="softmax probability", examples=[0.63])


class ClassifyResult(BaseModel):
    predictions: list[Prediction]


class AutoSelection(BaseModel):
    mode: str = Field(description="`auto`: the server chose the model and resolution", examples=["auto"])
    reason: str = Field(description="why this point: predicted within the budget, or the cheapest when none was")
    budget_ms: float = Field(description="the latency budget the choice was made for")
    predicted_ms: float = Field(description="the predicted completion: queue wait plus the point's own time")
    predicted_wait_ms: float = Field(description="the queue wait predicted for this point beside the images in flight")
    expected_top1: float = Field(description="the point's top-1 in percent, from the store's trade-off profile")


class ClassifyResponse(BaseModel):
    model: str
    resolution: int
    results: list[ClassifyResult] = Field(description="one per image, in the request's order")
    selection: AutoSelection | None = Field(default=None, description="with model=auto: how the point was chosen")


class EmbedResult(BaseModel):
    embedding: list[float]


class EmbedResponse(BaseModel):
    model: str
    resolution: int
    dim: int
    normalized: bool
    results: list[EmbedResult]


class Keypoint(BaseModel):
    name: str = Field(examples=["right_eye"], description="MediaPipe's face keypoint: the person's right eye first")
    x: float = Field(description="original-image pixels")
    y: float


class Detection(BaseModel):
    class_id: int = Field(examples=[12])
    label: str = Field(examples=["dog"])
    score: float = Field(
        description="mask_regions: mean softmax probability of the class over the region; ssd: the box's sigmoid score"
    )
    box: list[float] = Field(
        description="[x0, y0, x1, y1] in original-image pixels, within the image; integers with x1, y1 exclusive "
        "for mask_regions, fractional for ssd"
    )
    area: int | None = Field(default=None, description="mask_regions: region size in original-image pixels")
    keypoints: list[Keypoint] | None = Field(default=None, description="ssd: the 6 face keypoints")


class DetectResult(BaseModel):
    width: int
    height: int
    detections: list[Detection] = Field(description="best first; empty when nothing is found")


class DetectResponse(BaseModel):
    model: str
    resolution: int
    method: str = Field(
        description="`mask_regions`: connected regions of a segmentation mask; `ssd`: a single-shot detector's "
        "anchors, decoding and weighted non-maximum suppression",
        examples=["ssd"],
    )
    results: list[DetectResult]


class ModelInfo(BaseModel):
    name: str
    status: str = Field(description="loaded, loading, failed or not_configured")
    loaded: bool
    error: str | None = None
    store_intact: bool | None = Field(
        default=None,
        description="whether its files on disk still match what was loaded; null until checked or when not loaded",
    )
    store_problem: str | None = Field(default=None, description="what no longer matches, when store_intact is false")
    default_for: list[str] = Field(default_factory=list, description="endpoints that use it when no model is given")
    batching: dict[str, float] | None = None
    manifest: dict[str, Any] | None = Field(default=None, description="the variant's manifest.json")


class ModelList(BaseModel):
    default_model: str | None
    default_segmentation_model: str | None
    default_face_detection_model: str | None
    default_person_segmentation_model: str | None
    models: list[ModelInfo]


class TradeoffTiming(BaseModel):
    alone_ms: float = Field(description="one image run alone on one core")
    batch_ms: float = Field(description="per image, in a batch of batch_size")
    batch_size: int
    decode_ms: float = Field(description="decoding a 640x480 JPEG into this resolution")


class TradeoffPoint(BaseModel):
    model: str
    resolution: int
    alpha: float | None
    macs: int | None = Field(description="multiply-adds of one image at this resolution")
    params: int | None
    top1: float | None = Field(description="percent, on the profile's dataset; null where it has no figure")
    top5: float | None
    published_top1: float | None = Field(description="the manifest's published figure, at the native resolution")
    latency_ms: float | None = Field(description="decode_ms + alone_ms on this host; null where not calibrated")
    timing: TradeoffTiming | None
    profile_stale: bool = Field(description="the profile measured other weights (sha256): its figures are not used")
    frontier: bool = Field(description="no other served point is both more accurate and faster on this host")


class TradeoffDataset(BaseModel):
    name: str
    images: int
    labels_sha256: str


class AutoPoint(BaseModel):
    model: str
    resolution: int


class AutoInfo(BaseModel):
    available: bool = Field(description="whether /classify?model=auto is served")
    reason: str | None = Field(description="why not, when it is not")
    default_budget_ms: float
    points: list[AutoPoint] = Field(description="the frontier auto chooses on, cheapest first")


class Tradeoffs(BaseModel):
    dataset: TradeoffDataset
    command: str
    points: list[TradeoffPoint]
    auto: AutoInfo


class Health(BaseModel):
    status: str


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (400, 401, 404, 413, 415, 422, 429, 503, 504)
}
