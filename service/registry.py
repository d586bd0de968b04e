"""The models this server serves: load the configured variants, warm them up, answer look-ups."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from .batching import DynamicBatcher
from .config import Settings
from .cpu_affinity import instance_cpus
from .errors import ServiceError
from .metrics import Metrics
from .runtime import TASK_OUTPUTS, ModelSession
from .store import StoreEntry, StoreError, Variant, discover, verify_onnx

log = logging.getLogger("mobilenet_serve.registry")

DEFAULT_SEGMENTATION_MODEL = "deeplabv3_mnv2_pascal"
IMAGENET = "imagenet-1k"


class Status(StrEnum):
    NOT_CONFIGURED = "not_configured"
    LOADING = "loading"
    LOADED = "loaded"
    FAILED = "failed"


@dataclass
class ModelState:
    name: str
    variant: Variant | None
    status: Status
    error: str | None = None
    batcher: DynamicBatcher | None = None
    # Set by the store watch: None until its first check of a loaded model.
    store_intact: bool | None = None
    store_problem: str | None = None


@dataclass(frozen=True)
class Served:
    """A loaded model, as a request sees it."""

    variant: Variant
    batcher: DynamicBatcher


class Registry:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self.states: dict[str, ModelState] = {}
        self.ready = False
        self.load_error: str | None = None
        self.default_model: str | None = None
        self.default_segmentation_model: str | None = None

    async def load(self) -> None:
        """Read the store, load and warm up every configured variant, then declare readiness."""
        try:
            entries = await asyncio.to_thread(discover, self._settings.store)
        except StoreError as exc:
            self.load_error = str(exc)
            log.error("cannot read the model store: %s", exc)
            return
        wanted = self._settings.models
        for entry in entries:
            configured = wanted is None or entry.name in wanted
            self._add(entry, configured)
        for name in wanted or ():
            if name not in self.states:
                log.error("variant %s skipped: not in the model store %s", name, self._settings.store)
                self.states[name] = ModelState(name, None, Status.FAILED, "not in the model store")
        for state in self.states.values():
            if state.status is Status.LOADING:
                await self._load_one(state)
        self._choose_defaults()
        loaded = self.loaded_names()
        failed = [f"{s.name} ({s.error})" for s in self.states.values() if s.status is Status.FAILED]
        if not loaded:
            self.load_error = "no model could be loaded"
        self.ready = bool(loaded)
        log.info(
            "loaded %d models: %s; default model: %s%s",
            len(loaded),
            ", ".join(loaded) or "none",
            self.default_model,
            f"; failed: {'; '.join(failed)}" if failed else "",
        )

    def _add(self, entry: StoreEntry, configured: bool) -> None:
        if entry.variant is None:
            self.states[entry.name] = ModelState(entry.name, None, Status.FAILED, entry.error)
        else:
            status = Status.LOADING if configured else Status.NOT_CONFIGURED
            self.states[entry.name] = ModelState(entry.name, entry.variant, status)
        self._metrics.model_loaded.labels(entry.name).set(0)

    async def _load_one(self, state: ModelState) -> None:
        variant = state.variant
        assert variant is not None
        try:
            batching = self._settings.batching_for(variant.name)
            instances = batching.instances or 1  # batching_for has resolved it; `or 1` narrows the type
            session = await asyncio.to_thread(self._open_session, variant, instances)
            cpus = instance_cpus(instances, self._settings.pin_instances)
            batcher = DynamicBatcher(variant.name, session, batching, self._metrics, cpus)
            resolution = variant.native_resolution
            blank = np.zeros((3, resolution, resolution), dtype=np.float32)
            # One run per output set a request can ask for: ONNX Runtime prepares each set on first use.
            for task in sorted(variant.tasks):
                await batcher.warm_up(blank, TASK_OUTPUTS[task])
        except Exception as exc:
            state.status, state.error = Status.FAILED, str(exc)
            log.error("variant %s skipped: %s", variant.name, exc)
            return
        state.status, state.batcher = Status.LOADED, batcher
        self._metrics.model_loaded.labels(variant.name).set(1)

    def _open_session(self, variant: Variant, instances: int) -> ModelSession:
        verify_onnx(variant)
        try:
            session = ModelSession(variant.onnx_path, self._settings.intra_op_threads, instances)
        except Exception as exc:
            raise StoreError(f"ONNX Runtime cannot load {variant.onnx_path.name}: {exc}") from exc
        missing = {o for task in variant.tasks for o in TASK_OUTPUTS[task]} - session.output_names
        if missing:
            raise StoreError(f"{variant.onnx_path.name} lacks the outputs {sorted(missing)} its tasks need")
        return session

    def _choose_defaults(self) -> None:
        loaded = [self.states[name] for name in self.loaded_names()]
        preferred = self._settings.default_model
        if preferred in self.loaded_names():
            self.default_model = preferred
        else:
            imagenet = [
                s.name
                for s in loaded
                if s.variant and s.variant.label_space == IMAGENET and "classify" in s.variant.tasks
            ]
            self.default_model = imagenet[0] if imagenet else None
            log.warning("default model %s is not loaded; using %s instead", preferred, self.default_model)
        segmenters = [s.name for s in loaded if s.variant and "segment" in s.variant.tasks]
        if DEFAULT_SEGMENTATION_MODEL in segmenters:
            self.default_segmentation_model = DEFAULT_SEGMENTATION_MODEL
        else:
            self.default_segmentation_model = segmenters[0] if segmenters else None

    def loaded_names(self) -> list[str]:
        return [name for name, state in self.states.items() if state.status is Status.LOADED]

    def resolve(self, name: str | None, task: str) -> Served:
        """The loaded model a request asked for, or the error that explains why it cannot have it."""
        if not self.ready:
            raise ServiceError(
                503, "models are still loading; retry shortly", code="not_ready", headers={"Retry-After": "1"}
            )
        store_task = "segment" if task == "detect" else task
        if name is None:
            name = self.default_segmentation_model if store_task == "segment" else self.default_model
            if name is None:
                raise ServiceError(
                    404, f"no loaded model offers {task}", code="unknown_model", available=self.loaded_names()
                )
        state = self.states.get(name)
        if state is None or state.status is Status.NOT_CONFIGURED:
            where = "is not in the model store" if state is None else "is in the store but not loaded by this server"
            raise ServiceError(
                404,
                f"model {name!r} {where}; available: {', '.join(self.loaded_names())}",
                code="unknown_model",
                available=self.loaded_names(),
            )
        if state.status is not Status.LOADED or state.batcher is None or state.variant is None:
            raise ServiceError(
                503, f"model {name!r} is not available: {state.error or state.status.value}", code="model_unavailable"
            )
        if store_task not in state.variant.tasks:
            capable = [n for n in self.loaded_names() if store_task in self.states[n].variant.tasks]  # type: ignore[union-attr]
            raise ServiceError(
                400,
                f"model {name!r} does not support {task} (it offers {', '.join(sorted(state.variant.tasks))}); "
                f"models that do: {', '.join(capable) or 'none loaded'}",
                code="unsupported_task",
            )
        return Served(state.variant, state.batcher)

    async def close(self, timeout: float) -> None:
        batchers = [s.batcher for s in self.states.values() if s.batcher is not None]
        await asyncio.gather(*(b.drain(timeout) for b in batchers))
