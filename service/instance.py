"""A model's instances: threads that each take a core, have a batch's images decoded, stack them and run ONNX Runtime.

Each batch runs on a core granted by the CPU shares (cpu_shares.py), which are fair between models; its
images are decoded right before its run, on that core: in the decoder process pinned there
(decoders.py), or on the instance thread itself when decoding has no budget. That keeps the tensor in
the cache of the core that runs it (docs/benchmarks.md, "Decode on the instance"). A batch that fails
is rerun image by image, so only the culprit fails.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .batcher import BatchResult, Queued
from .cpu_affinity import pin_this_thread
from .cpu_shares import CpuShares
from .decoders import Decoder, DecoderPool
from .errors import ServiceError
from .metrics import Metrics
from .preprocess import prepare
from .runtime import INPUT_NAME, open_session
from .store import Variant

log = logging.getLogger("mobilenet_serve.instance")


@dataclass(frozen=True)
class ImageJob:
    """One image to run: the encoded image, or a float32 [3, S, S] tensor already preprocessed."""

    source: bytes | np.ndarray
    resolution: int
    outputs: tuple[str, ...]  # ONNX Runtime outputs, the same for every image of a batch
    original_size: tuple[int, int] | None = None  # of the image a tensor was decoded from, where it was


@dataclass(frozen=True)
class StageTimes:
    """Seconds one image spent waiting for an instance, being decoded and preprocessed, and in its batch's run."""

    queue: float = 0.0
    preprocess: float = 0.0
    inference: float = 0.0


@dataclass(frozen=True)
class ImageResult:
    outputs: list[np.ndarray]  # in the order of the job's outputs
    original_size: tuple[int, int]  # (width, height) of the upright image; a tensor's own size
    times: StageTimes = StageTimes()


@dataclass(frozen=True)
class _Ready:
    """An image decoded for a batch: where its outcome goes, its tensor, and its times so far."""

    index: int
    tensor: np.ndarray
    size: tuple[int, int]
    times: StageTimes


class ModelSession:
    """A model's ONNX Runtime sessions: a wide one for a run granted every core, a narrow one for a run on one.

    A lone run should use every core it may (`threads`); a run granted one core should use only that
    one, since oversubscribed cores cost more than they give. ONNX Runtime fixes the thread count per
    session, so the model keeps one session of each width when they differ. `run` may be called from
    several threads at once.
    """

    def __init__(self, onnx_path: Path, threads: int) -> None:
        self._wide = open_session(onnx_path, threads)
        self._narrow = self._wide if threads == 1 else open_session(onnx_path, 1)
        inputs = self._wide.get_inputs()
        if [i.name for i in inputs] != [INPUT_NAME]:
            raise ValueError(f"expected one input named {INPUT_NAME!r}, found {[i.name for i in inputs]}")
        self.output_names = frozenset(o.name for o in self._wide.get_outputs())

    def run(self, batch: np.ndarray, outputs: tuple[str, ...], alone: bool = True) -> list[np.ndarray]:
        session = self._wide if alone else self._narrow
        return session.run(list(outputs), {INPUT_NAME: batch})

    def warm_up(self, batch: np.ndarray, outputs: tuple[str, ...]) -> None:
        self._wide.run(list(outputs), {INPUT_NAME: batch})
        if self._narrow is not self._wide:
            self._narrow.run(list(outputs), {INPUT_NAME: batch})


class ModelInstances:
    """Runs a model's batches on `instances` threads, each batch on the core the CPU shares grant it.

    With `decoders`, a batch on core k decodes in decoder process k, which is killed when an image
    takes longer than its budget (see decoders.py); without, the thread decodes its images itself.
    """

    def __init__(
        self,
        variant: Variant,
        session: ModelSession,
        instances: int,
        max_pixels: int,
        metrics: Metrics,
        shares: CpuShares,
        decoders: DecoderPool | None = None,
        share: str | None = None,
    ) -> None:
        self.instances = instances
        self._variant = variant
        self._name = variant.name
        self.session = session
        self._max_pixels = max_pixels
        self._metrics = metrics
        self._shares = shares
        # The model's flow in the CPU shares: its name, or one per load while a reload overlaps the old one.
        self._share = share or variant.name
        self._decoders = decoders
        self._local = threading.local()
        self._thread_index = itertools.count()
        self._executor = ThreadPoolExecutor(
            max_workers=instances, thread_name_prefix=f"infer-{variant.name}", initializer=self._start_thread
        )

    def run_batch(self, batch: list[Queued[ImageJob]], alone: bool) -> asyncio.Future[BatchResult]:
        return asyncio.get_running_loop().run_in_executor(self._executor, self._run, batch, alone)

    async def warm_up(self, outputs: tuple[str, ...]) -> None:
        """One run outside the queue, so the first request does not pay for ONNX Runtime's lazy allocations."""
        size = self._variant.native_resolution
        blank = np.zeros((1, 3, size, size), dtype=np.float32)
        await asyncio.get_running_loop().run_in_executor(self._executor, self.session.warm_up, blank, outputs)

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def _start_thread(self) -> None:
        # Thread k asks for core k first: uncontended, instance k stays on core k.
        self._local.index = next(self._thread_index)

    def _run(self, batch: list[Queued[ImageJob]], alone: bool) -> BatchResult:
        """On an instance thread: take a core, decode each image there, then run the decoded ones together."""
        with self._shares.turn(self._share, whole=alone, prefer=self._local.index) as grant:
            if grant.cpu is not None and getattr(self._local, "cpu", None) != grant.cpu:
                pin_this_thread(grant.cpu)
                self._local.cpu = grant.cpu
            decoder = self._decoders.decoder(grant.slot) if self._decoders is not None else None
            return self._run_on_core(batch, decoder, len(grant.slots))

    def _run_on_core(self, batch: list[Queued[ImageJob]], decoder: Decoder | None, cores: int) -> BatchResult:
        started = time.perf_counter()
        alone = cores == self._shares.cores
        wait = self._metrics.queue_wait.labels(self._name)
        outcomes: list[ImageResult | BaseException | None] = []
        ready: list[_Ready] = []
        for item in batch:
            # Measured here, not when the batch was handed out: a batch may have waited for this instance.
            waited = started - item.enqueued_at
            wait.observe(waited)
            if item.abandoned:
                outcomes.append(ServiceError(504, "the request's deadline passed while it was queued"))
                continue
            try:
                tensor, size, seconds = self._prepare(item.payload, decoder)
            except Exception as exc:
                outcomes.append(exc)
                continue
            ready.append(_Ready(len(outcomes), tensor, size, StageTimes(waited, seconds)))
            outcomes.append(None)  # filled in by the run below
        outputs = batch[0].payload.outputs
        for entry, outcome in zip(ready, self._run_isolated(ready, outputs, alone), strict=True):
            outcomes[entry.index] = outcome
        return BatchResult(outcomes, time.perf_counter() - started, cores)

    def _prepare(self, job: ImageJob, decoder: Decoder | None) -> tuple[np.ndarray, tuple[int, int], float]:
        """The image's tensor, its original size, and the seconds decoding and preprocessing took here."""
        if isinstance(job.source, np.ndarray):
            return job.source, job.original_size or (job.resolution, job.resolution), 0.0
        started = time.perf_counter()
        spec = self._variant.preprocess
        try:
            if decoder is not None:
                tensor, size = decoder.prepare(job.source, spec, job.resolution, self._name)
            else:
                image = prepare(job.source, spec, job.resolution, self._max_pixels)
                tensor, size = image.tensor, image.original_size
        except ServiceError:
            raise
        except Exception as exc:
            raise ServiceError(400, f"image could not be decoded ({exc})", code="bad_image") from exc
        seconds = time.perf_counter() - started
        self._metrics.preprocess_duration.labels(self._name).observe(seconds)
        return tensor, size, seconds

    def _run_isolated(
        self, ready: list[_Ready], outputs: tuple[str, ...], alone: bool
    ) -> list[ImageResult | BaseException]:
        if not ready:
            return []
        try:
            results, seconds = self._infer([entry.tensor for entry in ready], outputs, alone)
        except Exception as exc:
            if len(ready) > 1:
                return [self._run_isolated([entry], outputs, alone)[0] for entry in ready]
            log.error("model %s: inference failed: %s", self._name, exc)
            return [ServiceError(500, f"inference failed: {exc}", code="inference_failed")]
        return [
            ImageResult([output[row] for output in results], entry.size, replace(entry.times, inference=seconds))
            for row, entry in enumerate(ready)
        ]

    def _infer(
        self, tensors: list[np.ndarray], outputs: tuple[str, ...], alone: bool
    ) -> tuple[list[np.ndarray], float]:
        stacked = np.stack(tensors) if len(tensors) > 1 else tensors[0][None]
        started = time.perf_counter()
        results = self.session.run(stacked, outputs, alone)
        seconds = time.perf_counter() - started
        self._metrics.inference_duration.labels(self._name).observe(seconds)
        self._metrics.batch_size.labels(self._name).observe(len(tensors))
        return results, seconds
