"""Closed-loop HTTP load generator shared by every benchmark target.

N workers each post one JPEG, wait for the answer, and post the next, cycling through the same files,
for a warm-up and then a measured window. Only requests that finish inside the window count; latency is
measured from just before the request is sent to the end of the response body. It runs in its own
process, so on a small machine it takes CPU from the server under test: the same share for every target.

    python bench/load.py --url http://127.0.0.1:8000/classify --concurrency 8 --duration 10 --warmup 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
IMAGE_DIR = REPO / "tests" / "data" / "images"
IMAGES = ("cat_720p.jpg", "parrot.jpg", "hot_dog.jpg", "pets.jpg", "owl.jpg")
RAW = "raw"
MULTIPART_PREFIX = "multipart:"
MAX_ERROR_SAMPLES = 3


@dataclass(frozen=True)
class Image:
    name: str
    data: bytes


@dataclass
class LoadResult:
    concurrency: int
    duration_s: float
    requests: int  # answered with 200 inside the window
    errors: int  # failed inside the window (non-200, transport error or timeout)
    throughput: float  # successful requests (one image each) per second
    p50_ms: float
    p99_ms: float
    mean_ms: float
    error_samples: list[str] = field(default_factory=list)


def load_images(directory: Path = IMAGE_DIR, names: Sequence[str] = IMAGES) -> list[Image]:
    return [Image(name, (directory / name).read_bytes()) for name in names]


def check_body_mode(body: str) -> None:
    if body != RAW and not (body.startswith(MULTIPART_PREFIX) and len(body) > len(MULTIPART_PREFIX)):
        raise ValueError(f"unknown body mode {body!r}; use {RAW!r} or '{MULTIPART_PREFIX}<field>'")


def request_kwargs(image: Image, body: str) -> dict[str, Any]:
    """aiohttp arguments posting one image as a raw image/jpeg body or as one multipart part."""
    check_body_mode(body)
    if body == RAW:
        return {"data": image.data, "headers": {"Content-Type": "image/jpeg"}}
    form = aiohttp.FormData()
    form.add_field(body[len(MULTIPART_PREFIX) :], image.data, filename=image.name, content_type="image/jpeg")
    return {"data": form}


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: the smallest value with at least pct% of the values at or below it."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


async def run_load(
    url: str,
    images: Sequence[Image],
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    body: str = RAW,
    timeout_s: float = 30.0,
) -> LoadResult:
    if concurrency < 1 or duration_s <= 0 or warmup_s < 0:
        raise ValueError("concurrency must be >= 1, duration > 0 and warm-up >= 0")
    check_body_mode(body)
    latencies: list[float] = []
    errors: list[str] = []
    started = time.perf_counter()
    window_start = started + warmup_s
    window_end = window_start + duration_s

    async def worker(index: int, session: aiohttp.ClientSession) -> None:
        turn = index
        while time.perf_counter() < window_end:
            image = images[turn % len(images)]
            turn += 1
            sent = time.perf_counter()
            try:
                async with session.post(url, **request_kwargs(image, body)) as response:
                    answer = await response.read()
                failure = None if response.status == 200 else f"HTTP {response.status}: {answer[:200]!r}"
            except (TimeoutError, aiohttp.ClientError) as exc:
                failure = f"{type(exc).__name__}: {exc}"
            done = time.perf_counter()
            if not window_start <= done <= window_end:
                continue
            if failure is None:
                latencies.append(done - sent)
            else:
                errors.append(failure)

    # One keep-alive connection per worker, as the workers never share one.
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(worker(i, session)) for i in range(concurrency)]
        # Requests in flight at the end are waited for (their answers fall outside the window), never
        # longer than one request timeout.
        _, pending = await asyncio.wait(tasks, timeout=warmup_s + duration_s + timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    latencies.sort()
    return LoadResult(
        concurrency=concurrency,
        duration_s=duration_s,
        requests=len(latencies),
        errors=len(errors),
        throughput=len(latencies) / duration_s,
        p50_ms=percentile(latencies, 50) * 1000.0,
        p99_ms=percentile(latencies, 99) * 1000.0,
        mean_ms=(sum(latencies) / len(latencies) * 1000.0) if latencies else math.nan,
        error_samples=sorted(set(errors))[:MAX_ERROR_SAMPLES],
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="endpoint to POST images to")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent closed-loop workers")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before the window opens")
    parser.add_argument("--body", default=RAW, help=f"'{RAW}' (image/jpeg body) or '{MULTIPART_PREFIX}<field>'")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds")
    parser.add_argument("--images", type=Path, default=IMAGE_DIR, help="directory holding the JPEG files")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(
        run_load(
            args.url,
            load_images(args.images),
            args.concurrency,
            args.duration,
            args.warmup,
            body=args.body,
            timeout_s=args.timeout,
        )
    )
    if args.json:
        # JSON has no NaN: a window without a single success reports null latencies.
        fields = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(result).items()}
        print(json.dumps(fields))
    else:
        print(
            f"c={result.concurrency} {result.throughput:.1f} img/s  p50 {result.p50_ms:.1f} ms  "
            f"p99 {result.p99_ms:.1f} ms  {result.requests} ok  {result.errors} errors"
        )
        for sample in result.error_samples:
            print(f"  error: {sample}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
