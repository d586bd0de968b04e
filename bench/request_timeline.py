"""Where a lone request's time goes inside the server: the median of each stage, at concurrency 1.

    python bench/request_timeline.py [--model mobilenet_v2_1.0_224_tv_int8] [--requests 300]

Runs the service in this process (uvicorn on a free loopback port, in a thread) with timestamps taken
at the stage boundaries of a /classify request, posts the five benchmark JPEGs one at a time over
one keep-alive connection, and prints the median of each stage and of the whole request as the
client saw it. The stages are read by wrapping the service's own functions; nothing in the service
changes. Timestamps come from one clock (perf_counter) in one process, so the stages add up.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service import batcher, core, instance, middleware, rest  # noqa: E402
from service.app import create_app  # noqa: E402
from service.config import Settings  # noqa: E402

IMAGES = ("cat_720p.jpg", "parrot.jpg", "hot_dog.jpg", "pets.jpg", "owl.jpg")
# (stage name, mark at its start, mark at its end), in the order a request passes them.
STAGES = (
    ("middleware, routing, parameters", "request", "endpoint"),
    ("read the body", "endpoint", "body"),
    ("queue the image", "body", "submitted"),
    ("wake an instance", "submitted", "instance"),
    ("decode and preprocess", "instance", "prepared"),
    ("ONNX Runtime", "prepared", "inferred"),
    ("wake the event loop", "inferred", "loop"),
    ("hand the outcome to the request", "loop", "outcome"),
    ("top-k and JSON", "outcome", "encoded"),
    ("send the response, metrics, log", "encoded", "done"),
)


class Timeline:
    """Timestamps of the request in flight (requests are sequential here, so one set is enough)."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}
        self.stages: dict[str, list[float]] = {}
        self.reset()

    def reset(self) -> None:
        """Forget the stages measured so far (the warm-up's)."""
        self.stages = {name: [] for name, _, _ in STAGES}

    def mark(self, name: str) -> None:
        self.marks[name] = time.perf_counter()

    def close_request(self) -> None:
        if all(start in self.marks and end in self.marks for _, start, end in STAGES):
            for name, start, end in STAGES:
                self.stages[name].append((self.marks[end] - self.marks[start]) * 1000.0)
        self.marks.clear()


def instrument(timeline: Timeline) -> None:
    mark = timeline.mark

    def before(owner: Any, attribute: str, name: str) -> None:
        original = getattr(owner, attribute)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            mark(name)
            return original(*args, **kwargs)

        setattr(owner, attribute, wrapped)

    def after_async(owner: Any, attribute: str, name: str) -> None:
        original: Callable[..., Any] = getattr(owner, attribute)

        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            result = await original(*args, **kwargs)
            mark(name)
            return result

        setattr(owner, attribute, wrapped)

    observe = middleware.ObservabilityMiddleware.__call__

    async def observed(self: Any, scope: Any, receive: Any, send: Any) -> None:
        timed = scope["type"] == "http" and scope["path"] == "/classify"
        if timed:
            mark("request")
        await observe(self, scope, receive, send)
        if timed:
            mark("done")
            timeline.close_request()

    middleware.ObservabilityMiddleware.__call__ = observed  # type: ignore[method-assign]
    serve = rest._serve

    async def endpoint_started(*args: Any, **kwargs: Any) -> Any:
        mark("endpoint")
        return await serve(*args, **kwargs)

    rest._serve = endpoint_started  # type: ignore[assignment]
    after_async(rest, "read_images", "body")
    before(batcher.Batcher, "submit", "submitted")
    before(instance.ModelInstances, "_infer", "prepared")
    after_async(core.Core, "run", "outcome")
    after_async(core.Core, "answer", "encoded")
    run_on_instance = instance.ModelInstances._run

    def on_instance(self: Any, batch: Any, alone: bool) -> Any:
        mark("instance")
        result = run_on_instance(self, batch, alone)
        mark("inferred")
        return result

    instance.ModelInstances._run = on_instance  # type: ignore[method-assign]
    finish = batcher.Batcher._finish

    async def loop_woke(self: Any, batch: Any, running: Any) -> None:
        await asyncio.wait([running])
        mark("loop")
        await finish(self, batch, running)

    batcher.Batcher._finish = loop_woke  # type: ignore[method-assign]


def drive(port: int, requests: int) -> list[float]:
    bodies = [(REPO / "tests" / "data" / "images" / name).read_bytes() for name in IMAGES]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies = []
    for index in range(requests):
        started = time.perf_counter()
        connection.request("POST", "/classify?top_k=5", body=bodies[index % len(bodies)],
                           headers={"Content-Type": "image/jpeg"})  # fmt: skip
        answer = connection.getresponse()
        answer.read()
        if answer.status != 200:
            raise SystemExit(f"request {index} failed with {answer.status}")
        latencies.append((time.perf_counter() - started) * 1000.0)
    connection.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilenet_v2_1.0_224_tv_int8")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=25)
    args = parser.parse_args()

    timeline = Timeline()
    instrument(timeline)
    app = create_app(Settings(models=[args.model], default_model=args.model, log_level="warning"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not (server.started and app.state.core.registry.ready):
        time.sleep(0.1)
    port = server.servers[0].sockets[0].getsockname()[1]
    drive(port, args.warmup)
    timeline.reset()
    latencies = drive(port, args.requests)
    server.should_exit = True
    thread.join(30)

    print(f"model {args.model}, {args.requests} requests at concurrency 1 (the five JPEGs in turn)\n")
    print("| stage | median ms |\n| --- | ---: |")
    for name, values in timeline.stages.items():
        print(f"| {name} | {statistics.median(values):.3f} |")
    print(f"| sum of the stage medians | {sum(statistics.median(v) for v in timeline.stages.values()):.3f} |")
    print(f"| request as the client saw it | {statistics.median(latencies):.3f} |")


if __name__ == "__main__":
    main()
