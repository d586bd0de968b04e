"""Honest traffic under attack: what hostile clients cost the honest ones, the event loop and memory.

    python bench/attack.py [--duration 15] [--honest 56] [--hostile 8] [--class-seconds 4]

One server (`python -m service.cli`, V2 int8 and DeepLab) is driven by `--honest` closed-loop clients
posting the benchmark JPEGs to /classify, first alone and then beside `--hostile` clients that each
cycle through every attack class below (or those `--classes` names), for `--duration` seconds each; the
hostile clients run in a process of their own, so that their own work does not delay the clients that
are timed. Printed per phase: honest
throughput, p50, p99 and errors, and the p99 of a /healthz probe sent every 10 ms; then the server's
resident memory (server and decoder processes) idle at start, idle after the honest phase (the level a
warm server sits at), at its peak under attack and idle again after it;
then each attack class alone for `--class-seconds`, with the probe's p99 and the statuses it got.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import multiprocessing
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "bench"), str(REPO / "tests")]

from harness import ServerProcess, start_server  # noqa: E402
from hostile_images import (  # noqa: E402
    bmp_rle8,
    corrupt_png,
    jpeg_with_scans,
    png_with_chunks,
    slow_png,
    tiff_with_strips,
)
from load import LoadResult, load_images, percentile, run_load  # noqa: E402

MODEL = "mobilenet_v2_1.0_224_tv_int8"
DEEPLAB = "deeplabv3_mnv2_pascal"
INFER = f"/v2/models/{MODEL}/infer"
Request = tuple[str, dict[str, str], bytes]  # path, headers, body of a POST
# How long the server is left idle before its memory is read: a heap trim needs two checks 2 s apart.
SETTLE_SECONDS = 5.0


def _huge_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (6000, 6000), (90, 90, 90)).save(buffer, "JPEG", quality=5)
    return buffer.getvalue()


def _v2(document: object, raw: bytes = b"") -> Request:
    header = json.dumps(document).encode()
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
    return INFER, headers if raw else {"Content-Type": "application/json"}, header + raw


def attack_classes() -> dict[str, Request]:
    empty = b"\0\0\0\0" * (19 * 1024 * 1024 // 4)
    elements = {
        "name": "image_bytes",
        "shape": [1, 1],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": len(empty)},
    }
    nested = '{"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES", "data": %s}]}' % (
        "[" * 1000 + '"eA=="' + "]" * 1000
    )
    small = io.BytesIO()
    Image.open(REPO / "tests" / "data" / "images" / "cat.png").resize((64, 64)).save(small, "PNG")
    eight = [[base64.b64encode(small.getvalue()).decode()]] * 8
    duplicates = {
        "inputs": [{"name": "image_bytes", "shape": [8, 1], "datatype": "BYTES", "data": eight}],
        "outputs": [{"name": "features_s32"}] * 400,
    }
    return {
        "bmp-rle": ("/classify", {"Content-Type": "image/bmp"}, bmp_rle8(6320, 6320)),
        "jpeg-scans": ("/classify", {"Content-Type": "image/jpeg"}, jpeg_with_scans(2000)),
        "png-chunks": ("/classify", {"Content-Type": "image/png"}, png_with_chunks(1_000_000)),
        "tiff-strips": ("/classify", {"Content-Type": "image/tiff"}, tiff_with_strips(1_900_000)),
        "corrupt-png": ("/classify", {"Content-Type": "image/png"}, corrupt_png()),
        "slow-png": ("/classify", {"Content-Type": "image/png"}, slow_png()),
        "detect-6000": ("/detect", {"Content-Type": "image/jpeg"}, _huge_jpeg()),
        "v2-empty-elements": _v2({"inputs": [elements]}, empty),
        "v2-nested": (INFER, {"Content-Type": "application/json"}, nested.encode()),
        "v2-duplicates": _v2(duplicates),
        "big-header": ("/classify", {"Content-Type": "image/jpeg", "X-Big": "a" * 1_000_000}, b""),
        "slowloris": ("", {}, b""),
    }


async def _post(port: int, request: Request) -> str:
    """Send one hostile request on its own connection; the status line's code, or what happened instead."""
    path, headers, body = request
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if not path:  # slowloris: a byte a second until the server gives up on the headers
            writer.write(b"GET /healthz HTTP/1.1\r\n")
            for _ in range(30):
                writer.write(b"X")
                await writer.drain()
                try:
                    line = await asyncio.wait_for(reader.readline(), 1.0)
                except TimeoutError:
                    continue
                return line.split(b" ")[1].decode() if line.startswith(b"HTTP/") else "closed"
            return "held"
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        writer.write(head.encode() + b"\r\n")
        writer.write(body)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 60)
        return line.split(b" ")[1].decode() if line.startswith(b"HTTP/") else "closed"
    except (ConnectionError, TimeoutError) as exc:
        return type(exc).__name__
    finally:
        writer.close()


async def _hostile(port: int, requests: list[Request], clients: int, seconds: float, seen: Counter[str]) -> None:
    end = time.perf_counter() + seconds

    async def client(index: int) -> None:
        turn = index
        while time.perf_counter() < end:
            seen[await _post(port, requests[turn % len(requests)])] += 1
            turn += 1

    await asyncio.gather(*(client(i) for i in range(clients)))


def _hostile_process(port: int, names: list[str], clients: int, seconds: float, results: Any) -> None:
    """The hostile clients in a process of their own: building and sending 19 MB bodies blocks an event loop,
    which must not be the one that times the honest clients and the probe."""
    classes = attack_classes()
    seen: Counter[str] = Counter()
    started = time.process_time()
    asyncio.run(_hostile(port, [classes[name] for name in names], clients, seconds, seen))
    seen["cpu_ms"] = round((time.process_time() - started) * 1000)
    results.put(dict(seen))


async def _attack(port: int, names: list[str], clients: int, seconds: float) -> Counter[str]:
    """Run `_hostile_process` for `seconds` and return the statuses its clients saw."""
    if not names:
        await asyncio.sleep(seconds)
        return Counter()
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_hostile_process, args=(port, names, clients, seconds, results))
    process.start()
    seen = await asyncio.get_running_loop().run_in_executor(None, results.get)
    process.join()
    return Counter(seen)


async def _probe(port: int, seconds: float) -> list[float]:
    """/healthz every 10 ms on one keep-alive connection: each answer's latency."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    latencies: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sent = time.perf_counter()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(15)  # {"status":"ok"}
        latencies.append(time.perf_counter() - sent)
        await asyncio.sleep(max(0.0, 0.01 - (time.perf_counter() - sent)))
    writer.close()
    return sorted(latencies)


def _rss_mib(server: ServerProcess) -> float:
    process = psutil.Process(server.process.pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


@dataclass
class Phase:
    honest: LoadResult
    probe_p99_ms: float
    peak_mib: float
    seen: Counter[str]


async def _phase(server: ServerProcess, args: argparse.Namespace, hostile: list[str]) -> Phase:
    peak = [_rss_mib(server)]

    async def sample_memory() -> None:
        while True:
            peak.append(_rss_mib(server))
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample_memory())
    load = run_load(server.url + "/classify", load_images(), args.honest, args.duration, 1.0)
    attack = _attack(server.port, hostile, args.hostile, args.duration + 1.0)
    honest, probe, seen = await asyncio.gather(load, _probe(server.port, args.duration + 1.0), attack)
    sampler.cancel()
    return Phase(honest, percentile(probe, 99) * 1000, max(peak), seen)


async def _main(args: argparse.Namespace) -> None:
    classes = attack_classes()
    config = {"models": [MODEL, DEEPLAB], "default_model": MODEL, "log_level": "warning"}
    server = start_server(Path(tempfile.mkdtemp(prefix="attack-")), config)
    try:
        idle = _rss_mib(server)
        quiet = await _phase(server, args, [])
        await asyncio.sleep(SETTLE_SECONDS)
        warm = _rss_mib(server)
        loud = await _phase(server, args, args.classes.split(",") if args.classes else list(classes))
        await asyncio.sleep(SETTLE_SECONDS)
        after = _rss_mib(server)
        print(f"{args.honest} honest clients, {args.hostile} hostile, {args.duration:g} s per phase\n")
        print("| phase | honest img/s | p50 ms | p99 ms | honest errors | /healthz p99 ms | peak MiB |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, phase in (("honest only", quiet), ("under attack", loud)):
            h = phase.honest
            print(f"| {name} | {h.throughput:.1f} | {h.p50_ms:.1f} | {h.p99_ms:.1f} | {h.errors} "
                  f"| {phase.probe_p99_ms:.1f} | {phase.peak_mib:.0f} |")  # fmt: skip
        ratio = loud.honest.throughput / quiet.honest.throughput
        p99_ratio = loud.honest.p99_ms / quiet.honest.p99_ms
        print(f"\nhonest throughput under attack: {ratio:.2f}x; p99: {p99_ratio:.2f}x")
        cpu_ms = loud.seen.pop("cpu_ms", 0)
        print(f"hostile answers: {dict(loud.seen)}; the hostile clients used {cpu_ms / 1000:.1f} CPU-seconds")
        print(
            f"memory: idle {idle:.0f} MiB at start, {warm:.0f} MiB after the honest phase; peak {loud.peak_mib:.0f} "
            f"MiB under attack, idle after it {after:.0f} MiB ({after / warm:.2f}x the warm idle level)\n"
        )
        print("| attack class alone | statuses | /healthz p99 ms |\n| --- | --- | ---: |")
        for name in classes if args.class_seconds else ():
            probe, seen = await asyncio.gather(
                _probe(server.port, args.class_seconds),
                _attack(server.port, [name], args.hostile, args.class_seconds),
            )
            seen.pop("cpu_ms", None)
            print(f"| {name} | {dict(seen)} | {percentile(probe, 99) * 1000:.1f} |")
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--honest", type=int, default=56)
    parser.add_argument("--hostile", type=int, default=8)
    parser.add_argument("--class-seconds", type=float, default=4.0, help="0 skips the classes alone")
    parser.add_argument("--classes", help="comma-separated attack classes for the mix (default: all)")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
