"""BentoML peer: a Service whose batchable API receives the images its adaptive batcher has gathered.

Configuration follows BentoML's guides: `workers="cpu_count"` (the "Workers" guide for CPU-bound
Python, since the GIL keeps one process from using every core), each worker with its own session and
ORT intra-op threads = cores / workers so the workers do not oversubscribe the cores, and the adaptive
batching guide's `batchable=True, max_batch_size=32, max_latency_ms=1000`. No traffic concurrency limit
(the default): setting one only matters to BentoCloud's autoscaler.

New-style BentoML APIs take JSON or multipart/form-data, not a raw image body: clients post one
multipart `images` part per request, and BentoML hands the API a list of the uploaded files' paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bentoml
import common

WORKERS = common.cpu_cores()


@bentoml.service(workers="cpu_count", traffic={"timeout": 60})
class Classifier:
    def __init__(self) -> None:
        self.model = common.load_session(common.variant_dir_from_env(), common.intra_op_threads(WORKERS))

    @bentoml.api(route="/classify", batchable=True, max_batch_size=32, max_latency_ms=1000)
    def classify(self, images: list[Path]) -> list[dict[str, Any]]:
        tensors = [common.preprocess(path.read_bytes(), self.model.manifest) for path in images]
        return common.classify_batch(self.model, tensors)
