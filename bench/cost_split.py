"""Where a request's CPU goes at a point of auto's frontier under open-loop load, and the rate ratio it bounds.

For the fixed default model and for auto's cheapest point (`--all`: every frontier point), this measures
the point's closed-loop capacity, then sends open-loop arrivals (tests/open_loop.py) at `--share` of it and
reads the CPU time of each part of the server, before and after, from /proc (psutil): the event loop (the
server's main thread: HTTP, routing, the image checks, auto's choice, postprocessing, the response), the
server's other threads (the model instances' hand-off to a decoder and ONNX Runtime, and a few helpers), and
the decoder processes (decoding and preprocessing); and the load generator's process. It prints each per
request sent.

Then two ratios of the default model's cost per request to the cheapest point's. The first bounds the
cheapest point's highest held rate over the fixed model's, where both hold the same share of the cores; no
rate auto holds is above its cheapest point's (bench/overload.py --edge-probes). The second leaves out the
cheapest point's instance threads: the ratio a point whose model cost nothing would reach, since the
decoding and the HTTP work are the same at every point.

    python bench/cost_split.py [--seconds 8] [--share 0.8] [--images DIR] [--all]
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "bench"), str(REPO / "tests")]

from harness import LOOPBACK, ServerProcess, start_server  # noqa: E402
from load import load_images  # noqa: E402
from open_loop import OpenLoop, run  # noqa: E402
from overload import CLASSIFIERS, closed_loop, jpegs_in, single_point  # noqa: E402

from service.config import PREFERRED_DEFAULT_MODEL  # noqa: E402

PARTS = ("event loop", "instance threads", "decoders", "generator")


@dataclass(frozen=True)
class Split:
    point: str
    rate: float
    answered: int
    ms: dict[str, float]  # CPU milliseconds per request, per part

    @property
    def server_ms(self) -> float:
        return sum(v for part, v in self.ms.items() if part != "generator")


def server_cpu(pid: int) -> dict[str, float]:
    """CPU seconds used so far by the server's main thread, its other threads, and its child processes."""
    process = psutil.Process(pid)
    threads = process.threads()
    loop = sum(t.user_time + t.system_time for t in threads if t.id == pid)
    others = sum(t.user_time + t.system_time for t in threads if t.id != pid)
    decoders = 0.0
    for child in process.children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        decoders += times.user + times.system
    return {"event loop": loop, "instance threads": others, "decoders": decoders}


def ended_children_cpu() -> float:
    """CPU seconds of this process's children that have ended: a load generator's, once its run is over."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def generator_start_cpu(server: ServerProcess) -> float:
    """CPU seconds a generator process takes to start and stop, sending nothing: left out of each run's."""
    before = ended_children_cpu()
    run(OpenLoop(LOOPBACK, server.port, "/", [b""], 1.0, 0.0))
    return ended_children_cpu() - before


def split(
    server: ServerProcess, point: str, target: str, rate: float, start_cpu: float, args: argparse.Namespace
) -> Split:
    bodies = [image.data for image in args.jpegs]
    before, generator_before = server_cpu(server.process.pid), ended_children_cpu()
    sent = run(OpenLoop(LOOPBACK, server.port, target, bodies, rate, args.seconds))
    after, generator_after = server_cpu(server.process.pid), ended_children_cpu()
    answered = sum(1 for s in sent if s.status == 200)
    used = {part: after[part] - before[part] for part in before}
    used["generator"] = generator_after - generator_before - start_cpu
    return Split(point, rate, answered, {part: 1000.0 * v / len(sent) for part, v in used.items()})


def print_splits(splits: list[Split]) -> None:
    print("| point | rate /s | answered | " + " | ".join(f"{p} ms" for p in PARTS) + " | server ms |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in PARTS) + " | ---: |")
    for s in splits:
        parts = " | ".join(f"{s.ms[p]:.2f}" for p in PARTS)
        print(f"| {s.point} | {s.rate:.0f} | {s.answered} | {parts} | {s.server_ms:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each open-loop run")
    parser.add_argument("--share", type=float, default=0.8, help="each run's rate, as a share of the point's capacity")
    parser.add_argument("--images", type=Path, help="directory of JPEGs to send (default: the five benchmark JPEGs)")
    parser.add_argument("--all", action="store_true", help="every point of auto's frontier, not only the cheapest")
    args = parser.parse_args()
    args.jpegs = jpegs_in(args.images) if args.images else load_images()
    config = {"models": CLASSIFIERS, "default_model": PREFERRED_DEFAULT_MODEL, "log_level": "warning"}
    server = start_server(Path(tempfile.mkdtemp(prefix="cost-split-")), config)
    try:
        frontier = httpx.get(server.url + "/v1/tradeoffs", timeout=10).json()["auto"]["points"]
        points = [single_point(p) for p in (frontier if args.all else frontier[:1])]
        points.append((f"{PREFERRED_DEFAULT_MODEL} (default)", f"/classify?model={PREFERRED_DEFAULT_MODEL}"))
        start_cpu = generator_start_cpu(server)
        splits = []
        for name, path in points:
            capacity = closed_loop(server, path, args.jpegs).throughput
            splits.append(split(server, name, path + "&top_k=1", args.share * capacity, start_cpu, args))
        print(f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} CPUs; CPU ms per request sent:")
        print_splits(splits)
        fixed, cheapest = splits[-1], splits[0]
        modelless = cheapest.server_ms - cheapest.ms["instance threads"]
        ratio, bound = fixed.server_ms / cheapest.server_ms, fixed.server_ms / modelless
        print(f"\nthe default model's server cost per request over the cheapest point's: {ratio:.2f}x")
        print(f"over the cheapest point's without its instance threads (a model that cost nothing): {bound:.2f}x")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
