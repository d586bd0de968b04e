"""An open-loop load generator: requests sent at a fixed arrival rate, whether or not earlier ones were answered.

A closed loop (N clients, each waiting for its answer) slows down with the server and hides queueing; an
open loop keeps sending, as production traffic does. Arrivals are a Poisson process of the given rate
(or evenly spaced), scheduled in advance; each request is timed from its scheduled send, so a send the
generator made late counts against the latency it reports, and the sends more than LATE_SECONDS behind
schedule are counted. The client is a small HTTP/1.1 one on asyncio streams, keep-alive connections
opened as needed, so that a send costs the 2-core machine little. It runs in a process of its own.

Module-level imports are the standard library only: the benchmarks and the tests both import it.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
from dataclasses import dataclass
from typing import Any

LATE_SECONDS = 0.005


@dataclass(frozen=True)
class Sent:
    scheduled: float  # seconds from the start of the run
    late: float  # how far behind schedule it was sent
    latency: float  # from its scheduled send to the end of its answer; the timeout for a timeout
    status: int  # 0: no answer (timed out or connection failed)
    model: str | None  # of a 200 answer
    resolution: int | None


@dataclass(frozen=True)
class OpenLoop:
    host: str
    port: int
    target: str  # path and query
    bodies: list[bytes]  # JPEGs, sent in turn
    rate: float  # requests per second
    seconds: float
    timeout: float = 10.0
    poisson: bool = True
    seed: int = 0


def run(load: OpenLoop) -> list[Sent]:
    """Run `load` in a process of its own and return one record per request, in the order scheduled."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_run_here, (load,))


def _run_here(load: OpenLoop) -> list[Sent]:
    return asyncio.run(_Generator(load).run())


class _Generator:
    def __init__(self, load: OpenLoop) -> None:
        self._load = load
        self._requests = [_request(load, body) for body in load.bodies]
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._writers: set[asyncio.StreamWriter] = set()

    async def run(self) -> list[Sent]:
        load = self._load
        loop = asyncio.get_running_loop()
        rng = random.Random(load.seed)
        start = loop.time() + 0.1
        tasks = []
        offset = 0.0
        while offset < load.seconds:
            delay = start + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            request = self._requests[len(tasks) % len(self._requests)]
            tasks.append(loop.create_task(self._send(request, start + offset, offset)))
            offset += rng.expovariate(load.rate) if load.poisson else 1.0 / load.rate
        sent = list(await asyncio.gather(*tasks))
        for writer in self._writers:
            writer.close()
        return sent

    async def _send(self, request: bytes, at: float, offset: float) -> Sent:
        loop = asyncio.get_running_loop()
        late = loop.time() - at
        try:
            status, body = await asyncio.wait_for(self._exchange(request), self._load.timeout - late)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            return Sent(offset, late, self._load.timeout, 0, None, None)
        latency = loop.time() - at
        model = resolution = None
        if status == 200:
            answer: dict[str, Any] = json.loads(body)
            model, resolution = answer.get("model"), answer.get("resolution")
        return Sent(offset, late, latency, status, model, resolution)

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        if self._idle:
            reader, writer = self._idle.pop()
        else:
            reader, writer = await asyncio.open_connection(self._load.host, self._load.port)
            self._writers.add(writer)
        try:
            writer.write(request)
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
            status = int(head.split(" ", 2)[1])
            length = next(
                int(line.split(":", 1)[1]) for line in head.split("\r\n") if line.startswith("content-length:")
            )
            body = await reader.readexactly(length)
        except BaseException:
            writer.close()
            self._writers.discard(writer)
            raise
        if "connection: close" in head:
            writer.close()
            self._writers.discard(writer)
        else:
            self._idle.append((reader, writer))
        return status, body


def _request(load: OpenLoop, body: bytes) -> bytes:
    head = (
        f"POST {load.target} HTTP/1.1\r\nHost: {load.host}:{load.port}\r\n"
        f"Content-Type: image/jpeg\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


def late_sends(sent: list[Sent]) -> int:
    return sum(1 for s in sent if s.late > LATE_SECONDS)
