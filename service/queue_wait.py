"""How long a new image waits for the cores, from what every model has queued and running (auto_select.py).

The CPU shares (cpu_shares.py) give each image in flight about the same share of the cores whatever its
model, so a new image does not wait for the whole backlog to drain: while it gets its own time's worth
of CPU, every other image in flight gets as much, or its whole time where that is less (processor
sharing). Batches are not interrupted, so while the cores are taken it also waits for one to come free:
up to one image time of the costliest model running. While a core is free, it does not wait.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Flow:
    """One model's images in flight."""

    items: int  # queued and running
    seconds_per_item: float  # the model's recent instance time per image


def backlog_ms(flows: list[Flow], cores: int) -> float:
    """The time the cores need for every image in flight: the load, whatever comes next."""
    return 1000.0 * sum(flow.items * flow.seconds_per_item for flow in flows) / cores


def shared_wait_ms(flows: list[Flow], cores: int, own_ms: float) -> float:
    """The wait of a new image that needs `own_ms` of a core, beside the images in flight."""
    busy = [flow for flow in flows if flow.items > 0]
    if sum(flow.items for flow in busy) < cores:
        return 0.0  # a core is free
    shared = sum(flow.items * min(1000.0 * flow.seconds_per_item, own_ms) for flow in busy) / cores
    return shared + 1000.0 * max(flow.seconds_per_item for flow in busy)
