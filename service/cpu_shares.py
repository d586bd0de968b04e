"""Processor sharing between the models: each core is granted in turn, fairly per image in flight.

Each model's instance threads are a flow that takes a core for each batch. When several flows wait for a
core, it goes to the flow that has had the least core time per image it has in flight (its virtual time, as
in start-time fair queueing), so each image in flight gets about the same CPU whatever model it asks for.
Left to the operating system, two busy models split the cores half and half: 8 clients of DeepLab (2.7 GMACs
an image) took most of the CPU from 56 clients of a classifier (docs/reliability.md, "Honest traffic under
attack"). A flow alone takes every core it asks for; a batch whose model has nothing else running may take
all of them at once. Batches are not interrupted, so a flow that is owed a whole core (56 of 64 images in
flight on two cores is owed one) always has one: the costly flows share what is left.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

Weight = Callable[[], int]  # the images a flow has in flight now, read from any thread


@dataclass(frozen=True)
class Grant:
    slots: tuple[int, ...]  # the cores granted, as indices 0..cores-1
    cpu: int | None  # the CPU the first slot is pinned to, None where nothing is pinned

    @property
    def slot(self) -> int:
        return self.slots[0]


@dataclass
class _Flow:
    weight: Weight
    virtual_time: float = 0.0
    waiting: int = 0  # threads waiting for a core
    held: int = 0  # cores held

    @property
    def active(self) -> bool:
        return bool(self.waiting or self.held)


class CpuShares:
    """`cores` slots, one per core; `cpus[k]` is the CPU slot k is pinned to where pinning applies."""

    def __init__(self, cores: int, cpus: Sequence[int] | None, clock: Callable[[], float] = time.perf_counter) -> None:
        self.cores = cores
        self._cpus = list(cpus) if cpus else None
        self._clock = clock
        self._free = list(range(cores))
        self._flows: dict[str, _Flow] = {}
        # The virtual time of the flow granted last: where a flow that was idle starts again.
        self._floor = 0.0
        self._changed = threading.Condition()

    def add(self, name: str, weight: Weight) -> None:
        with self._changed:
            self._flows[name] = _Flow(weight)

    def remove(self, name: str) -> None:
        with self._changed:
            self._flows.pop(name, None)
            self._changed.notify_all()

    @contextmanager
    def turn(self, name: str, whole: bool = False, prefer: int = 0) -> Iterator[Grant]:
        """Wait for a core, or every core when `whole` and nothing else wants one; hold it inside the block.

        The core `prefer` (modulo the cores) comes first when free, so that a thread that asks for the same
        one each time stays on it and keeps its caches warm.
        """
        slots = self._acquire(name, whole, prefer % self.cores)
        started = self._clock()
        try:
            yield Grant(slots, self._cpus[slots[0]] if self._cpus else None)
        finally:
            self._release(name, slots, self._clock() - started)

    def _acquire(self, name: str, whole: bool, prefer: int) -> tuple[int, ...]:
        with self._changed:
            flow = self._flows[name]
            if not flow.active:
                # A flow that was idle starts level with the others instead of spending credit it banked.
                flow.virtual_time = max(flow.virtual_time, self._floor)
            flow.waiting += 1
            self._changed.wait_for(lambda: self._next() is flow)
            flow.waiting -= 1
            self._floor = max(self._floor, flow.virtual_time)
            alone = all(other is flow or not other.active for other in self._flows.values())
            count = len(self._free) if whole and alone and len(self._free) == self.cores else 1
            flow.held += count
            first = prefer if prefer in self._free else self._free[0]
            slots = (first, *[slot for slot in self._free if slot != first][: count - 1])
            self._free = [slot for slot in self._free if slot not in slots]
            if self._free:
                self._changed.notify_all()  # another waiter may take what is left
            return slots

    def _release(self, name: str, slots: tuple[int, ...], seconds: float) -> None:
        with self._changed:
            flow = self._flows.get(name)
            if flow is not None:
                flow.held -= len(slots)
                flow.virtual_time += seconds * len(slots) / max(1, flow.weight())
            self._free = sorted(self._free + list(slots))
            self._changed.notify_all()

    def _next(self) -> _Flow | None:
        """The flow the next free core goes to: the waiting one with the least virtual time, among those allowed.

        A core is held back from the others while a waiting flow holds fewer than the whole cores its
        weight is owed, so that no mix of costly flows can take every core from a busy cheap one.
        """
        if not self._free:
            return None
        active = [flow for flow in self._flows.values() if flow.active]
        weights = [max(1, flow.weight()) for flow in active]
        total = sum(weights)
        # Only a flow that is asking is owed anything: a core is never kept for one that would not take it.
        owed = [
            max(0, self.cores * weight // total - flow.held) if flow.waiting else 0
            for flow, weight in zip(active, weights, strict=True)
        ]
        spare = len(self._free) - sum(owed)
        allowed = [flow for flow, due in zip(active, owed, strict=True) if flow.waiting and (due > 0 or spare > 0)]
        return min(allowed, key=lambda flow: flow.virtual_time, default=None)
