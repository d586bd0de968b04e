"""Prometheus metrics with the names dashboards and alerts rely on."""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.openmetrics import exposition as openmetrics

# 0.5 ms .. 10 s: a batch-1 MobileNet run is a few milliseconds, a DeepLab batch can take seconds.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
    0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)

CONTENT_TYPE = CONTENT_TYPE_LATEST
OPENMETRICS_CONTENT_TYPE = openmetrics.CONTENT_TYPE_LATEST


class Metrics:
    """One registry per app, so several apps (tests) never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # What every Prometheus client exposes by default: process (memory, CPU, descriptors), platform, GC.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self.requests = Counter(
            "mobilenet_requests_total",
            "HTTP requests by endpoint, model and status code.",
            ("endpoint", "model", "code"),
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "mobilenet_request_duration_seconds",
            "End-to-end request latency, from the first byte read to the response.",
            ("endpoint", "model"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.preprocess_duration = Histogram(
            "mobilenet_preprocess_duration_seconds",
            "Decode and preprocessing time per image.",
            ("model",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "mobilenet_queue_wait_seconds",
            "Time an image waits in the batcher's queue before its ONNX Runtime run starts.",
            ("model",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference_duration = Histogram(
            "mobilenet_inference_duration_seconds",
            "Duration of one ONNX Runtime run (one batch).",
            ("model",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "mobilenet_batch_size",
            "Images per ONNX Runtime run.",
            ("model",),
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "mobilenet_queue_depth",
            "Images waiting in the batcher's queue.",
            ("model",),
            registry=self.registry,
        )
        self.model_loaded = Gauge(
            "mobilenet_model_loaded",
            "1 when the model is loaded and warmed up, else 0.",
            ("model",),
            registry=self.registry,
        )
        self.decoder_restarts = Counter(
            "mobilenet_decoder_restarts_total",
            "Decoder processes killed and replaced: over the decode budget, crashed, or retired for their memory.",
            ("model", "reason"),
            registry=self.registry,
        )
        self.model_store_intact = Gauge(
            "mobilenet_model_store_intact",
            "1 while a loaded model's files on disk match what was loaded, 0 once they no longer do.",
            ("model",),
            registry=self.registry,
        )

        self.auto_selections = Counter(
            "mobilenet_auto_selections_total",
            "model=auto choices by variant, resolution and whether the point was predicted within the budget.",
            ("model", "resolution", "budget"),
            registry=self.registry,
        )
        self.auto_predicted = Histogram(
            "mobilenet_auto_predicted_seconds",
            "model=auto: the latency predicted for the chosen point when it was chosen.",
            ("model", "resolution"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.auto_latency = Histogram(
            "mobilenet_auto_latency_seconds",
            "model=auto: the latency of the answered request, beside its prediction.",
            ("model", "resolution"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.auto_wait = Gauge(
            "mobilenet_auto_queue_wait_seconds",
            "model=auto: the backlog, the time the cores need for every image queued and running, as last sampled.",
            registry=self.registry,
        )
        self.auto_ceiling = Gauge(
            "mobilenet_auto_ceiling_top1",
            "model=auto: the mean top-1 (percent) of the split of points its ceiling lets it choose now.",
            registry=self.registry,
        )
        self.auto_busy = Gauge(
            "mobilenet_auto_cpu_busy",
            "model=auto: the share of the cores the server used, averaged over auto.hold_seconds; its climbs judge it.",
            registry=self.registry,
        )

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition and its content type: OpenMetrics when the scraper accepts it, else Prometheus text."""
        if "application/openmetrics-text" in accept:
            return openmetrics.generate_latest(self.registry), OPENMETRICS_CONTENT_TYPE
        return generate_latest(self.registry), CONTENT_TYPE
