"""The models this server serves: load the configured variants, warm them up, choose the default models."""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from .auto_select import AutoSelector, Unavailable, build_selector
from .batcher import Batcher
from .calibration import CalibrationTarget, Timing, calibrate
from .config import BatchingConfig, Settings
from .cpu_affinity import instance_cpus
from .cpu_shares import CpuShares
from .cpu_use import CpuUse
from .decoder_setup import start_decoders, start_large_images
from .decoders import DecoderPool
from .errors import ServiceError
from .frontier import Profile, load_profile
from .instance import ModelInstances, ModelSession
from .large_images import LargeImages
from .metrics import Metrics
from .queue_wait import Flow
from .store import StoreEntry, StoreError, Variant, discover, verify_onnx
from .tasks import DEFAULTS, choose_defaults, outputs_for
from .tradeoffs import is_imagenet_classifier

log = logging.getLogger("mobilenet_serve.registry")


class Status(StrEnum):
    NOT_CONFIGURED = "not_configured"
    LOADING = "loading"
    LOADED = "loaded"
    FAILED = "failed"


@dataclass(frozen=True)
class LoadedModel:
    """A model that can serve: its variant, its batch queue and the instances that run its batches."""

    variant: Variant
    batcher: Batcher
    instances: ModelInstances
    share: str = ""  # its flow in the CPU shares


@dataclass
class ModelState:
    name: str
    variant: Variant | None
    status: Status
    error: str | None = None
    loaded: LoadedModel | None = None
    # Set by the store watch: None until its first check of a loaded model.
    store_intact: bool | None = None
    store_problem: str | None = None


class Registry:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self.states: dict[str, ModelState] = {}
        self.ready = False
        self.started = False  # load() has finished, whether or not any model loaded
        self.load_error: str | None = None
        # DEFAULTS' keys -> the model each names, None when no loaded model fits.
        self.defaults: dict[str, str | None] = dict.fromkeys(DEFAULTS)
        self._decoders: DecoderPool | None = None
        cores = settings.intra_op_threads
        self.shares = CpuShares(cores, instance_cpus(cores, settings.pin_instances))
        self.large_images: LargeImages | None = None  # once load() has started the decoders
        # (model, resolution) -> this host's timing, for the ImageNet classifiers (calibration.py).
        self.timings: dict[tuple[str, int], Timing] = {}
        self.profile: Profile | None = None  # the store's tradeoffs.json (frontier.py)
        self.auto: AutoSelector | Unavailable | None = None  # once loaded
        self._cpu = CpuUse()
        self._loads = itertools.count()

    async def load(self) -> None:
        """Read the store, load and warm up every configured variant, then declare readiness."""
        self._decoders = await asyncio.to_thread(start_decoders, self._settings, self._metrics)
        self.large_images = await asyncio.to_thread(start_large_images, self._settings, self._metrics)
        try:
            entries = await asyncio.to_thread(discover, self._settings.store)
        except StoreError as exc:
            self.load_error = str(exc)
            log.error("cannot read the model store: %s", exc)
            return
        configured = self._settings.models
        for entry in entries:
            self._add(entry, configured is None or entry.name in configured)
        for name in configured or ():
            if name not in self.states:
                log.error("variant %s skipped: not in the model store %s", name, self._settings.store)
                self.states[name] = ModelState(name, None, Status.FAILED, "not in the model store")
        for state in self.states.values():
            if state.status is Status.LOADING:
                await self._load_one(state)
        await self.refresh()
        loaded = self.loaded_names()
        failed = [f"{s.name} ({s.error})" for s in self.states.values() if s.status is Status.FAILED]
        if not loaded:
            self.load_error = "no model could be loaded"
        self.ready = bool(loaded)
        self.started = True
        log.info(
            "loaded %d models: %s; default model: %s%s",
            len(loaded),
            ", ".join(loaded) or "none",
            self.defaults["default_model"],
            f"; failed: {'; '.join(failed)}" if failed else "",
        )

    def _selector(self) -> AutoSelector | Unavailable:
        cores = self.shares.cores
        variants = [model.variant for model in self.classifiers()]
        auto = build_selector(
            self._settings.auto, variants, self.profile, self.timings, self._backlog, self._live_ms, self._cpu.seconds,
            self._admits, cores, self._metrics,
        )  # fmt: skip
        if isinstance(auto, Unavailable):
            log.warning("model=auto unavailable: %s", auto.reason)
        else:
            log.info("model=auto chooses among %s", ", ".join(f"{p.model}@{p.resolution}" for p in auto.frontier))
        return auto

    def _admits(self, name: str, count: int) -> bool:
        state = self.states.get(name)
        return state is not None and state.loaded is not None and state.loaded.batcher.can_admit(count)

    def _live_ms(self, name: str, resolution: int) -> tuple[float, float] | None:
        """A classifier's recent time per image at `resolution` on one core, and the seconds since it last ran."""
        state = self.states.get(name)
        if state is None or state.loaded is None:
            return None
        pace = state.loaded.batcher.pace_of((resolution, outputs_for("classify")))  # the key core.run queues under
        if pace is None:
            return None
        return 1000.0 * pace.seconds_per_item, time.monotonic() - pace.recorded_at

    def _backlog(self) -> list[Flow]:
        """Every model's images queued and running: they share the cores."""
        batchers = [s.loaded.batcher for s in self.states.values() if s.loaded is not None]
        return [Flow(batcher.in_flight, batcher.pace.seconds_per_item) for batcher in batchers]

    @property
    def store(self) -> Path:
        return self._settings.store

    @property
    def wanted(self) -> set[str] | None:
        """The variants the settings name (`models`), None for every one in the store."""
        return None if self._settings.models is None else set(self._settings.models)

    def live(self, model: LoadedModel) -> LoadedModel:
        """The version of `model`'s variant that takes requests now: a reload may have replaced it."""
        state = self.states.get(model.variant.name)
        if state is None or state.loaded is None:
            raise ServiceError(503, f"model {model.variant.name!r} was unloaded", code="model_unavailable")
        return state.loaded

    def classifiers(self) -> list[LoadedModel]:
        """The loaded ImageNet classifiers, in store order: the trade-off points (tradeoffs.py)."""
        loaded = [s.loaded for s in self.states.values() if s.loaded is not None]
        return [model for model in loaded if is_imagenet_classifier(model.variant)]

    def loaded_names(self) -> list[str]:
        return [name for name, state in self.states.items() if state.status is Status.LOADED]

    def offering(self, manifest_task: str) -> list[str]:
        """The loaded models whose manifest lists `manifest_task`."""
        return [
            s.name for s in self.states.values() if s.loaded is not None and manifest_task in s.loaded.variant.tasks
        ]

    async def close(self, timeout: float) -> None:
        models = [s.loaded for s in self.states.values() if s.loaded is not None]
        await asyncio.gather(*(model.batcher.drain(timeout) for model in models))
        # Decoders first: an instance thread waiting on a decode still in progress is answered at once.
        if self._decoders is not None:
            self._decoders.close()
        if self.large_images is not None:
            self.large_images.close()
        for model in models:
            model.instances.close()

    def _add(self, entry: StoreEntry, configured: bool) -> None:
        if entry.variant is None:
            self.states[entry.name] = ModelState(entry.name, None, Status.FAILED, entry.error)
        else:
            status = Status.LOADING if configured else Status.NOT_CONFIGURED
            self.states[entry.name] = ModelState(entry.name, entry.variant, status)
        # Only the models this server is to serve have a series: 0 for one of them is a failure to alert on.
        if configured:
            self._metrics.model_loaded.labels(entry.name).set(0)

    async def _load_one(self, state: ModelState) -> None:
        variant = state.variant
        assert variant is not None
        try:
            state.loaded = await self.open(variant)
        except Exception as exc:
            state.status, state.error = Status.FAILED, str(exc)
            log.error("variant %s skipped: %s", variant.name, exc)
            return
        state.status = Status.LOADED
        self._metrics.model_loaded.labels(variant.name).set(1)

    async def open(self, variant: Variant) -> LoadedModel:
        """A new loaded instance of `variant`, warmed up; one of the same name may go on serving meanwhile."""
        config = self._settings.batching_for(variant.name)
        count = config.instances or 1  # batching_for has resolved it; `or 1` narrows the type
        share = f"{variant.name}#{next(self._loads)}"
        session = await asyncio.to_thread(self._open_session, variant)
        instances = ModelInstances(
            variant, session, count, self._settings.max_image_pixels, self._metrics, self.shares, self._decoders, share
        )
        depth = self._metrics.queue_depth.labels(variant.name)
        batcher = Batcher(variant.name, config, instances.run_batch, count, depth.set, _batch_limit(variant, config))
        self.shares.add(share, lambda: batcher.in_flight)
        try:
            # One run per output set a request can ask for: ONNX Runtime prepares each set on first use.
            for task in sorted(variant.tasks):
                await instances.warm_up(outputs_for(task))
        except Exception:
            self.shares.remove(share)
            instances.close()
            raise
        return LoadedModel(variant, batcher, instances, share)

    async def retire(self, model: LoadedModel) -> None:
        """Let a model that no longer takes requests finish those it has, then free it."""
        await model.batcher.drain(self._settings.shutdown_grace_seconds)
        self.shares.remove(model.share)
        await asyncio.to_thread(model.instances.close)
        # The sessions sit in reference cycles (an executor's initializer is a bound method of its owner):
        # collected now, their memory goes back at once instead of at some later collection.
        gc.collect()

    async def refresh(self, changed: str | None = None) -> None:
        """At start and after models came or went (`changed` was loaded anew): the default models, the trade-off
        profile, this host's timings and model=auto's points."""
        self.timings = {key: timing for key, timing in self.timings.items() if key[0] != changed}
        try:
            self.profile = load_profile(self._settings.store)
        except ValueError as exc:
            log.error("no trade-off profile: %s", exc)
            self.profile = None
        loaded = [s.loaded for s in self.states.values() if s.loaded is not None]
        self.defaults = choose_defaults([model.variant for model in loaded], self._settings.default_model)
        untimed = [m for m in self.classifiers() if (m.variant.name, m.variant.native_resolution) not in self.timings]
        targets = [_calibration_target(model, self._settings) for model in untimed]
        self.timings.update(await asyncio.to_thread(calibrate, targets, self._settings.calibration_seconds))
        for model in untimed:
            timing = self.timings.get((model.variant.name, model.variant.native_resolution))
            if timing is not None:
                # Until its first batch, model=auto's queue-wait prediction counts its images at this cost.
                model.batcher.pace.expect((timing.batch_ms + timing.decode_ms) / 1000.0)
        self.auto = self._selector()

    def _open_session(self, variant: Variant) -> ModelSession:
        verify_onnx(variant)
        try:
            session = ModelSession(variant.onnx_path, self._settings.intra_op_threads)
        except Exception as exc:
            raise StoreError(f"ONNX Runtime cannot load {variant.onnx_path.name}: {exc}") from exc
        missing = {o for task in variant.tasks for o in outputs_for(task)} - session.output_names
        if missing:
            raise StoreError(f"{variant.onnx_path.name} lacks the outputs {sorted(missing)} its tasks need")
        return session


def _batch_limit(variant: Variant, config: BatchingConfig) -> Callable[[Hashable], int]:
    """Images per batch for a key (resolution, outputs): `max_batch_size`, or fewer where `max_batch_macs` says."""

    def limit(key: Hashable) -> int:
        macs = variant.macs_at(key[0] if isinstance(key, tuple) else variant.native_resolution)
        if macs is None:
            return config.max_batch_size
        return max(1, min(config.max_batch_size, config.max_batch_macs // max(1, macs)))

    return limit


def _calibration_target(model: LoadedModel, settings: Settings) -> CalibrationTarget:
    variant, session = model.variant, model.instances.session
    limit = _batch_limit(variant, settings.batching_for(variant.name))
    return CalibrationTarget(
        variant,
        lambda resolution: limit((resolution, ("logits",))),
        lambda batch: session.run(batch, ("logits",), alone=False),
    )
