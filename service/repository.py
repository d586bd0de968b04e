"""Model control while serving, with the semantics of Triton's model repository extension.

`model_control_mode` decides who changes what is loaded, as Triton's `--model-control-mode` does:
`none` (the models loaded at start stay), `explicit` (POST /v2/repository/models/{name}/load and
/unload), or `poll` (a loop compares the store with what is loaded every `repository_poll_seconds`:
it loads new variants, reloads changed ones and unloads removed ones). A load opens and warms the new
version while the old one serves; requests go to the new one once it is ready, and those the old one
holds finish on it before it is freed. A load that fails leaves the previous version serving, with
the reason in /v1/models and the repository index.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import NoReturn

from .errors import ServiceError
from .metrics import Metrics
from .registry import ModelState, Registry, Status
from .store import StoreEntry, StoreError, Variant, discover, parse_variant

log = logging.getLogger("mobilenet_serve.repository")

NONE, EXPLICIT, POLL = "none", "explicit", "poll"


@dataclass(frozen=True)
class IndexEntry:
    name: str
    state: str  # Triton's: READY, LOADING, UNAVAILABLE
    reason: str


class Repository:
    def __init__(self, registry: Registry, metrics: Metrics, mode: str) -> None:
        self._registry = registry
        self._metrics = metrics
        self.mode = mode
        self._changing = asyncio.Lock()  # one load or unload at a time
        self._failed_files: dict[str, Files] = {}  # poll mode: files that failed to load are not tried again

    async def index(self, ready_only: bool = False) -> list[IndexEntry]:
        """Every variant of the store and every one this server knows, with its state."""
        states = self._registry.states
        names = sorted({entry.name for entry in await asyncio.to_thread(self._discover)} | set(states))
        entries = [_entry(name, states.get(name)) for name in names]
        return [entry for entry in entries if entry.state == "READY" or not ready_only]

    async def load(self, name: str) -> None:
        """Load `name` from the store, or load its files again: the request the explicit mode serves."""
        self._allow()
        async with self._changing:
            await self._load(name)

    async def unload(self, name: str) -> None:
        self._allow()
        async with self._changing:
            await self._unload(name)

    async def poll(self, interval_seconds: float) -> None:
        """In poll mode, make what is loaded follow the store, every `interval_seconds`, until cancelled."""
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                async with self._changing:
                    await self._follow_store()
            except Exception:
                log.exception("polling the model store failed")

    def _allow(self) -> None:
        if self.mode != EXPLICIT:
            raise ServiceError(
                400,
                f"explicit model load and unload is not allowed when model_control_mode is {self.mode!r}; "
                "start the server with --model-control-mode explicit",
                code="model_control_disabled",
            )
        if not self._registry.started:
            raise ServiceError(503, "the models configured at start are still loading; retry shortly",
                               code="not_ready", headers={"Retry-After": "1"})  # fmt: skip

    async def _load(self, name: str) -> None:
        registry = self._registry
        state = registry.states.get(name)
        if not (registry.store / name).is_dir() or name.startswith((".", "_")):
            self._failed(name, state, f"the model store {registry.store} has no entry {name!r}")
        try:
            variant = await asyncio.to_thread(parse_variant, registry.store / name)
        except (StoreError, OSError) as exc:
            self._failed(name, state, f"not a loadable store entry: {exc}")
        if state is None:
            state = registry.states[name] = ModelState(name, variant, Status.LOADING)
        elif state.loaded is None:
            state.status = Status.LOADING
        old = state.loaded
        try:
            new = await registry.open(variant)
        except Exception as exc:
            self._failed(name, state, str(exc))
        state.variant, state.loaded, state.status, state.error = variant, new, Status.LOADED, None
        state.store_intact = state.store_problem = None
        self._metrics.model_loaded.labels(name).set(1)
        if not registry.ready:  # no model had loaded at start: this one makes the server ready
            registry.ready, registry.load_error = True, None
        await registry.refresh(changed=name)
        log.info("model %s %s", name, "reloaded" if old is not None else "loaded")
        if old is not None:
            await registry.retire(old)

    def _failed(self, name: str, state: ModelState | None, reason: str) -> NoReturn:
        """Record why `name` did not load (its previous version, if any, keeps serving) and refuse the request."""
        log.error("model %s failed to load: %s", name, reason)
        if state is not None:
            state.error = reason
            if state.loaded is None:
                state.status = Status.FAILED
        raise ServiceError(400, f"failed to load {name!r}: {reason}", code="load_failed")

    async def _unload(self, name: str) -> None:
        registry = self._registry
        state = registry.states.get(name)
        if state is None:
            if (registry.store / name).is_dir():
                return  # in the store, never loaded: nothing to do, as Triton answers
            raise ServiceError(400, f"failed to unload {name!r}: no such model", code="unknown_model")
        old, state.loaded = state.loaded, None
        state.status, state.error = Status.NOT_CONFIGURED, None
        # Unloaded on purpose: no series, as for a model never loaded, so that no alert takes it for a failure.
        with contextlib.suppress(KeyError):
            self._metrics.model_loaded.remove(name)
        if old is not None:
            await registry.refresh()
            log.info("model %s unloaded", name)
            await registry.retire(old)

    async def _follow_store(self) -> None:
        registry = self._registry
        wanted = registry.wanted
        on_disk = {entry.name: entry.variant for entry in await asyncio.to_thread(self._discover) if entry.variant}
        for name, variant in on_disk.items():
            state = registry.states.get(name)
            loaded = state.loaded.variant if state is not None and state.loaded is not None else None
            files = _files(variant)
            if (wanted is not None and name not in wanted) or self._failed_files.get(name) == files:
                continue
            if loaded is None or _content(loaded) != _content(variant):
                try:
                    await self._load(name)
                except ServiceError:
                    self._failed_files[name] = files  # logged and in the model's state; retried once they change
        for name, state in list(registry.states.items()):
            if state.loaded is not None and name not in on_disk:
                await self._unload(name)

    def _discover(self) -> list[StoreEntry]:
        try:
            return discover(self._registry.store)
        except StoreError:
            return []


def _content(variant: Variant) -> tuple[str, tuple[str, ...]]:
    """What poll mode compares with the loaded version: the manifest (with the ONNX file's sha256) and labels."""
    return json.dumps(variant.manifest, sort_keys=True), variant.labels


# A variant's content and its ONNX file's size and modification time: files that failed are tried again
# only once one of these changes (a copy into the store may have been caught half done).
Files = tuple[tuple[str, tuple[str, ...]], tuple[int, int] | None]


def _files(variant: Variant) -> Files:
    try:
        status = variant.onnx_path.stat()
    except OSError:
        return _content(variant), None
    return _content(variant), (status.st_size, status.st_mtime_ns)


def _entry(name: str, state: ModelState | None) -> IndexEntry:
    if state is None:
        return IndexEntry(name, "UNAVAILABLE", "not loaded")
    if state.status is Status.LOADED:
        return IndexEntry(name, "READY", f"previous load failed, still serving: {state.error}" if state.error else "")
    if state.status is Status.LOADING:
        return IndexEntry(name, "LOADING", "")
    return IndexEntry(name, "UNAVAILABLE", state.error or "not loaded")
