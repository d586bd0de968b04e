"""End-to-end throughput and latency of the service against an in-process baseline, in one run.

    python bench/service_bench.py [--model NAME] [--duration 15] [--rounds 3] [--concurrency 1 8 32]

Two servers (`python -m service.cli` subprocesses loading only the model under test) run side by
side: one with the service's default dynamic batching, one with batching off (max_batch_size 1).
A closed-loop load generator drives them: N keep-alive connections, each posting the next JPEG as
soon as its previous answer arrived. The baseline does the same decode + preprocess + ONNX Runtime
+ top-k work in this process, with no HTTP: one image at a time ("batch 1"), and N images split
among as many threads as the server has instances, each decoding its share and running it as one
batch ("batch N").

Every point is measured in `--rounds` interleaved slices (baseline, batching on, batching off, in
turn), so load from other processes on the machine hits all setups alike; the CPU that other
processes used during each slice is reported as "background cores". The load generator speaks raw
HTTP/1.1 over asyncio streams, so it takes as little CPU from the server as Python allows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
# tests/harness.py starts and stops the servers, as it does for the tests.
sys.path.insert(0, str(REPO / "tests"))

from harness import ServerProcess, start_server  # noqa: E402

from service.config import PREFERRED_DEFAULT_MODEL  # noqa: E402
from service.cpu_use import cpu_seconds  # noqa: E402
from service.instance import ModelSession  # noqa: E402
from service.postprocess import top_k  # noqa: E402
from service.preprocess import prepare  # noqa: E402
from service.store import parse_variant  # noqa: E402
from service.tasks import TASKS  # noqa: E402

STORE = REPO / "model_store"
IMAGES = sorted((REPO / "tests" / "data" / "images").glob("*.jpg"))
MAX_PIXELS = 40_000_000
BASE_ONE = "in-process, batch 1"
BASE_BATCH = "in-process, batch N"
ON = "service, batching on"
OFF = "service, batching off"


@dataclass
class Slice:
    latencies: list[float]
    images: int
    seconds: float
    errors: int = 0
    background_cores: float = 0.0


@dataclass
class Point:
    setup: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    throughput: float  # images per second
    p50_ms: float
    p99_ms: float
    background_cores: float = field(default=0.0)


def merge(setup: str, concurrency: int, parts: list[Slice]) -> Point:
    latencies = [value for part in parts for value in part.latencies]
    seconds = sum(part.seconds for part in parts)
    return Point(
        setup=setup,
        concurrency=concurrency,
        requests=len(latencies),
        errors=sum(part.errors for part in parts),
        seconds=seconds,
        throughput=sum(part.images for part in parts) / seconds,
        p50_ms=float(np.percentile(latencies, 50)) * 1000 if latencies else float("nan"),
        p99_ms=float(np.percentile(latencies, 99)) * 1000 if latencies else float("nan"),
        background_cores=sum(part.background_cores * part.seconds for part in parts) / seconds,
    )


class CpuMeter:
    """CPU used by processes other than this one and its descendants (the servers and their decoder processes),
    from /proc."""

    def __init__(self) -> None:
        self.ticks = os.sysconf("SC_CLK_TCK")
        self._mark = (0.0, 0, 0.0)

    def _busy_total(self) -> int:
        with open("/proc/stat") as stat:
            user, nice, system, _idle, _iowait, irq, softirq, *_ = map(int, stat.readline().split()[1:])
        return user + nice + system + irq + softirq

    def _ours(self) -> float:
        me = psutil.Process()
        return sum(cpu_seconds(pid) for pid in [me.pid, *(child.pid for child in me.children(recursive=True))])

    def start(self) -> None:
        self._mark = (time.monotonic(), self._busy_total(), self._ours())

    def others(self) -> float:
        if not os.path.exists("/proc/stat"):
            return float("nan")
        started, busy, ours = self._mark
        wall = time.monotonic() - started
        other_seconds = (self._busy_total() - busy) / self.ticks - (self._ours() - ours)
        return max(0.0, other_seconds / wall)


# --- in-process baseline ---------------------------------------------------------------------------


class Baseline:
    """The service's work with no HTTP: `instances` threads, each decoding its share of a batch and running it."""

    def __init__(self, model: str, threads: int, instances: int) -> None:
        self.variant = parse_variant(STORE / model)
        self.session = ModelSession(self.variant.onnx_path, threads)
        self.instances = instances
        self.pool = ThreadPoolExecutor(max_workers=instances)
        self.outputs = TASKS["classify"].outputs
        self.bodies = [path.read_bytes() for path in IMAGES]

    def _prepare(self, data: bytes) -> np.ndarray:
        return prepare(data, self.variant.preprocess, self.variant.native_resolution, MAX_PIXELS).tensor

    def one(self, data: bytes) -> None:
        logits = self.session.run(self._prepare(data)[None], self.outputs)[0]
        top_k(logits[0], 5)

    def batch(self, bodies: list[bytes]) -> None:
        shares = [bodies[k :: self.instances] for k in range(self.instances)]
        list(self.pool.map(self._share, [share for share in shares if share]))

    def _share(self, bodies: list[bytes]) -> None:
        tensors = [self._prepare(data) for data in bodies]
        logits = self.session.run(np.stack(tensors), self.outputs, alone=self.instances == 1)[0]
        for row in logits:
            top_k(row, 5)

    def measure(self, concurrency: int, duration: float, batched: bool) -> Slice:
        size = concurrency if batched else 1
        self.batch(self.bodies[:size]) if batched else self.one(self.bodies[0])
        latencies: list[float] = []
        images = 0
        started = time.perf_counter()
        while time.perf_counter() - started < duration:
            group = [self.bodies[(images + k) % len(self.bodies)] for k in range(size)]
            t0 = time.perf_counter()
            self.batch(group) if batched else self.one(group[0])
            latencies.extend([time.perf_counter() - t0] * size)
            images += size
        return Slice(latencies, images, time.perf_counter() - started)


# --- the service -----------------------------------------------------------------------------------


def serve_model(workdir: Path, model: str, batching: dict[str, float], threads: int) -> ServerProcess:
    config = {
        "models": [model],
        "default_model": model,
        "intra_op_threads": threads,
        "log_level": "warning",
        "default_batching": {"max_queue_size": 1024, "timeout_ms": 60_000, **batching},
    }
    name = "off" if batching.get("max_batch_size") == 1 else "on"
    return start_server(workdir / f"batching-{name}", config, timeout=120)


class Connection:
    """One keep-alive HTTP/1.1 connection sending prebuilt requests."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, request: bytes) -> int:
        self.writer.write(request)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


def build_requests(port: int, model: str) -> list[bytes]:
    requests = []
    for path in IMAGES:
        body = path.read_bytes()
        head = (
            f"POST /classify?model={model}&top_k=5 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: image/jpeg\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    return requests


async def drive(port: int, model: str, concurrency: int, duration: float, warmup: float) -> Slice:
    requests = build_requests(port, model)
    connections = [await Connection.open(port) for _ in range(concurrency)]
    latencies: list[float] = []
    errors = 0
    measuring = False
    stop_at = time.perf_counter() + warmup + duration

    async def worker(index: int, connection: Connection) -> None:
        nonlocal errors
        turn = index
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            status = await connection.send(requests[turn % len(requests)])
            if measuring:
                if status == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1
            turn += 1

    tasks = [asyncio.create_task(worker(i, c)) for i, c in enumerate(connections)]
    await asyncio.sleep(warmup)
    measuring = True
    started = time.perf_counter()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    for connection in connections:
        connection.close()
    return Slice(latencies, len(latencies), elapsed, errors)


def measure_service(port: int, model: str, concurrency: int, duration: float, warmup: float) -> Slice:
    return asyncio.run(drive(port, model, concurrency, duration, warmup))


# --- report ----------------------------------------------------------------------------------------


def machine() -> str:
    model_name = "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model_name = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{model_name}, {os.cpu_count()} cores, Python {platform.python_version()}, {system}"


def table(points: list[Point]) -> str:
    by = {(p.setup, p.concurrency): p for p in points}
    lines = [
        "| concurrency | setup | images/s | p50 ms | p99 ms | errors | background cores "
        "| throughput vs baseline | p50 vs baseline |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in sorted({p.concurrency for p in points}):
        batch_base = by.get((BASE_BATCH, c), by.get((BASE_ONE, c)))
        rows = [
            (by.get((BASE_ONE, c)), None),
            (by.get((BASE_BATCH, c)), None),
            (by.get((ON, c)), batch_base),
            (by.get((OFF, c)), by.get((BASE_ONE, c))),
        ]
        for p, base in rows:
            if p is None:
                continue
            setup = p.setup.replace("batch N", f"batch {c}")
            ratio = f"{p.throughput / base.throughput:.2f}x" if base else ""
            delta = f"{p.p50_ms - by[(BASE_ONE, c)].p50_ms:+.2f} ms" if base else ""
            lines.append(
                f"| {c} | {setup} | {p.throughput:.1f} | {p.p50_ms:.2f} | {p.p99_ms:.2f} | {p.errors} "
                f"| {p.background_cores:.2f} | {ratio} | {delta} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=PREFERRED_DEFAULT_MODEL)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds measured per point, over all rounds")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per point")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="seconds of load before each service slice is measured"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-batch-size", type=int, help="batching on: max_batch_size (default: the service's)")
    parser.add_argument(
        "--max-queue-delay-ms", type=float, help="batching on: max_queue_delay_ms (default: the service's)"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ONNX Runtime intra-op threads")
    parser.add_argument(
        "--instances", type=int, help="batching on: instances (default: the service's, one per thread)"
    )
    parser.add_argument("--json", type=Path, help="also write the points here")
    args = parser.parse_args()
    # Turn SIGTERM into SystemExit so the servers started below are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    print(f"machine: {machine()}")
    print(f"model: {args.model}; images: {', '.join(p.name for p in IMAGES)}")
    print(f"command: python {' '.join(sys.argv)}")
    batching_on = {
        key: value
        for key, value in (
            ("max_batch_size", args.max_batch_size),
            ("max_queue_delay_ms", args.max_queue_delay_ms),
            ("instances", args.instances),
        )
        if value is not None
    }
    slice_seconds = args.duration / args.rounds
    slices: dict[tuple[str, int], list[Slice]] = {}

    with tempfile.TemporaryDirectory() as workdir:
        servers = {
            ON: serve_model(Path(workdir), args.model, batching_on, args.threads),
            OFF: serve_model(Path(workdir), args.model, {"max_batch_size": 1}, args.threads),
        }
        meter = CpuMeter()
        baseline = Baseline(args.model, args.threads, args.instances or args.threads)
        try:
            for round_index in range(args.rounds):
                for c in args.concurrency:
                    for setup in (BASE_ONE, BASE_BATCH, ON, OFF):
                        if (setup == BASE_BATCH and c == 1) or (setup == BASE_ONE and c != args.concurrency[0]):
                            continue  # batch 1 in process does not depend on the concurrency
                        meter.start()
                        if setup in servers:
                            measured = measure_service(servers[setup].port, args.model, c, slice_seconds, args.warmup)
                        else:
                            measured = baseline.measure(c, slice_seconds, batched=setup == BASE_BATCH)
                        measured.background_cores = meter.others()
                        slices.setdefault((setup, c), []).append(measured)
                        print(
                            f"round {round_index + 1}/{args.rounds} c={c:<3d} {setup:22s} "
                            f"{measured.images / measured.seconds:7.1f} images/s, "
                            f"background {measured.background_cores:.2f} cores",
                            file=sys.stderr,
                        )
        finally:
            baseline.pool.shutdown()
            for server in servers.values():
                server.stop(signal.SIGTERM)

    points = [merge(setup, c, parts) for (setup, c), parts in slices.items()]
    single = next(p for p in points if p.setup == BASE_ONE)
    points += [Point(**{**asdict(single), "concurrency": c}) for c in args.concurrency if c != single.concurrency]
    print()
    print(table(points))
    if args.json:
        args.json.write_text(json.dumps([asdict(p) for p in points], indent=2))
    by = {(p.setup, p.concurrency): p for p in points}
    top = max(args.concurrency)
    print()
    base_top = by.get((BASE_BATCH, top), by[(BASE_ONE, top)])
    for setup in (ON, OFF):
        print(
            f"c={top}: {setup} reaches {by[(setup, top)].throughput / base_top.throughput:.0%} "
            f"of in-process batch {top} (target >= 80%)"
        )
    if 1 in args.concurrency:
        for setup in (ON, OFF):
            print(
                f"c=1: {setup} p50 is {by[(setup, 1)].p50_ms - by[(BASE_ONE, 1)].p50_ms:+.2f} ms "
                "from in-process batch 1 (target within 2 ms)"
            )


if __name__ == "__main__":
    main()
