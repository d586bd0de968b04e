"""Degrade instead of refusing: open-loop load at 0.5x to 4x the default model's capacity, fixed model against auto.

The default model's capacity is measured first (closed loop, 32 clients), and that of auto's cheapest
point, which bounds the rates auto can hold. Then, at each multiple of the default model's capacity,
an open-loop generator (tests/open_loop.py, in a process of its own) sends Poisson arrivals at that
rate to `/classify` with the fixed default model, and to `/classify?model=auto` with a 100 ms budget
(`--budget-ms`, which is also the server's `auto.default_budget_ms`, the budget auto's ceiling keeps to).
Each run begins with `--warmup` seconds at its rate that are not counted: what is measured is the
steady state at that rate, not how the previous run (another mode, another rate) left the queues and
auto's ceiling.
Per rate and mode it prints goodput (answers within the budget per second), p50/p99 from the scheduled
send, refusals (429/503), timeouts, and the mean expected top-1 of the answers (the store profile's
figure for each answer's model and resolution). A rate is held when at least 99% of the requests were
answered within the budget and none was refused. Right after auto's run at each rate (this VM's speed
drifts over minutes, so the runs compared should be close in time) it finds the most accurate single
fixed point (of auto's frontier) that holds the rate, to compare auto's mean expected top-1 with.
A grid of multiples only brackets each mode's highest held rate; `--edge-probes N` then bisects it in
N runs each for the fixed model, auto and auto's cheapest point alone, between 0 and that point's
closed-loop capacity. `--images DIR` sends every JPEG in DIR instead of the five benchmark JPEGs.
`--rounds N` runs the grid N times at the same rates, then prints per rate how many rounds each mode held,
and auto's mean top-1 beside each round's best single point: on a VM whose speed drifts over minutes, one
run at the edge of a rate is a coin toss.
`--over-budget refuse` sends auto's requests with `over_budget=refuse`: refused at once where no point
is predicted within the budget, and given up once it has passed, instead of answered late.

    python bench/overload.py [--seconds 8] [--warmup 2] [--multiples 0.5,1,2,3,4] [--budget-ms 100]
                             [--edge-probes 0] [--images DIR] [--over-budget answer] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "bench"), str(REPO / "tests")]

from harness import LOOPBACK, ServerProcess, start_server  # noqa: E402
from load import Image, LoadResult, load_images, percentile, run_load  # noqa: E402
from open_loop import OpenLoop, Sent, late_sends, run  # noqa: E402

from service.config import PREFERRED_DEFAULT_MODEL  # noqa: E402

CLASSIFIERS = [
    "mobilenet_v1_0.25_128", "mobilenet_v1_0.5_160", "mobilenet_v1_0.75_192", "mobilenet_v1_1.0_224",
    "mobilenet_v2_1.0_224", "mobilenet_v2_1.0_224_ptq", "mobilenet_v2_1.0_224_tv", "mobilenet_v2_1.0_224_tv_int8",
]  # fmt: skip
HELD_SHARE = 0.99
PAUSE_SECONDS = 3.0  # between runs: the queues drain and auto's load signal falls


@dataclass(frozen=True)
class Row:
    mode: str
    rate: float
    sent: int
    goodput: float
    within: float  # share of requests answered within the budget
    p50_ms: float
    p99_ms: float
    refused: int
    timeouts: int
    late: int
    top1: float  # mean expected top-1 of the answers
    points: dict[str, int]

    @property
    def held(self) -> bool:
        return self.within >= HELD_SHARE and self.refused == 0 and self.timeouts == 0


def summarise(mode: str, rate: float, sent: list[Sent], seconds: float, budget_s: float, top1: dict) -> Row:
    answered = [s for s in sent if s.status == 200]
    latencies = sorted(s.latency if s.status else float("inf") for s in sent)
    within = [s for s in answered if s.latency <= budget_s]
    points: dict[str, int] = {}
    for s in answered:
        key = f"{s.model}@{s.resolution}"
        points[key] = points.get(key, 0) + 1
    mean_top1 = sum(top1[(s.model, s.resolution)] for s in answered) / len(answered) if answered else float("nan")
    return Row(
        mode, rate, len(sent), len(within) / seconds, len(within) / len(sent),
        percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000,
        sum(1 for s in sent if s.status in (429, 503)), sum(1 for s in sent if s.status == 0),
        late_sends(sent), mean_top1, points,
    )  # fmt: skip


def drive(server: ServerProcess, mode: str, target: str, rate: float, args: argparse.Namespace, top1: dict) -> Row:
    bodies = [image.data for image in args.jpegs]
    load = OpenLoop(LOOPBACK, server.port, target, bodies, rate, args.warmup + args.seconds, seed=int(rate))
    sent = [s for s in run(load) if s.scheduled >= args.warmup]
    time.sleep(PAUSE_SECONDS)
    return summarise(mode, rate, sent, args.seconds, args.budget_ms / 1000.0, top1)


def jpegs_in(directory: Path) -> list[Image]:
    paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if not paths:
        raise SystemExit(f"no JPEG files in {directory}")
    return [Image(p.name, p.read_bytes()) for p in paths]


def single_point(point: dict) -> tuple[str, str]:
    """A frontier point's name, and the /classify path that asks for it alone."""
    model, resolution = point["model"], point["resolution"]
    return f"{model}@{resolution}", f"/classify?model={model}&resolution={resolution}"


def closed_loop(server: ServerProcess, path: str, images: list[Image]) -> LoadResult:
    """`path` at concurrency 32, 8 s counted after 2 s of warm-up: its capacity."""
    return asyncio.run(run_load(server.url + path, images, 32, 8.0, 2.0))


def best_single_point(
    server: ServerProcess, frontier: list[dict], start: int, rate: float, args: argparse.Namespace, top1: dict
) -> tuple[list[Row], int | None]:
    """The runs of single points from frontier[start] down until one holds `rate`, and its index (None: none)."""
    tried = []
    for index in range(start, -1, -1):
        name, path = single_point(frontier[index])
        tried.append(drive(server, name, path + "&top_k=1", rate, args, top1))
        if tried[-1].held:
            return tried, index
    return tried, None


@dataclass(frozen=True)
class Round:
    rows: list[Row]  # the fixed model's and auto's runs, in turn per rate
    best: dict[float, Row | None]  # per rate, the most accurate single point that held it (None: none did)


def grid(
    server: ServerProcess, rates: list[float], frontier: list[dict], auto: str, args: argparse.Namespace, top1: dict
) -> Round:
    """The fixed model and auto at each rate, each rate's best single point tried right after auto; printed."""
    rows: list[Row] = []
    single_rows: list[Row] = []
    best: dict[float, Row | None] = {}
    start: int | None = len(frontier) - 1  # a point that cannot hold a rate cannot hold a higher one
    for rate in rates:
        rows.append(drive(server, "fixed", "/classify?top_k=1", rate, args, top1))
        rows.append(drive(server, "auto", auto, rate, args, top1))
        best[rate] = None
        if start is not None:
            tried, start = best_single_point(server, frontier, start, rate, args, top1)
            single_rows.extend(tried)
            if start is not None:
                best[rate] = tried[-1]
            else:
                print(f"(no single point holds {rate:.0f}/s, so none is tried at a higher rate)")
    print_rows(rows)
    print("\nThe most accurate single point of auto's frontier that holds each rate, tried right after auto:")
    print_rows(single_rows)
    held = {mode: max((r.rate for r in rows if r.mode == mode and r.held), default=0.0) for mode in ("fixed", "auto")}
    print(f"\nhighest rate held: fixed {held['fixed']:.0f}/s, auto {held['auto']:.0f}/s")
    return Round(rows, best)


def print_rounds(rounds: list[Round]) -> None:
    """Per rate, over the rounds: how often each mode held, and auto's mean expected top-1 beside the best single
    point's of the same round."""
    print(f"\nOver {len(rounds)} rounds (per round: fixed held, auto held, auto's top-1 / the best single point's):")
    print("| rate /s | fixed held | auto held | auto's top-1 against the best single point's, per round |")
    print("| ---: | ---: | ---: | --- |")
    for rate in rounds[0].best:
        fixed = [r for one in rounds for r in one.rows if r.rate == rate and r.mode == "fixed"]
        auto = [r for one in rounds for r in one.rows if r.rate == rate and r.mode == "auto"]
        pairs = []
        for one, ours in zip(rounds, auto, strict=True):
            best = one.best[rate]
            mark = "" if ours.held else " (missed)"
            pairs.append(f"{ours.top1:.2f}{mark} / " + (f"{best.top1:.2f} ({best.mode})" if best else "none held"))
        print(f"| {rate:.0f} | {sum(r.held for r in fixed)}/{len(fixed)} | {sum(r.held for r in auto)}/{len(auto)} "
              f"| {'; '.join(pairs)} |")  # fmt: skip


def highest_held(
    server: ServerProcess, targets: dict[str, str], ceiling: float, args: argparse.Namespace, top1: dict
) -> tuple[dict[str, float], list[Row]]:
    """Each target's highest held rate, bisected between 0 and `ceiling` in `args.edge_probes` runs, and the runs.

    The targets take turns, so that their runs share the VM's minutes."""
    brackets = {mode: (0.0, ceiling) for mode in targets}  # (highest rate held, lowest rate not held)
    runs = []
    for _ in range(args.edge_probes):
        for mode, target in targets.items():
            held, failed = brackets[mode]
            runs.append(drive(server, mode, target, (held + failed) / 2, args, top1))
            brackets[mode] = (runs[-1].rate, failed) if runs[-1].held else (held, runs[-1].rate)
    return {mode: held for mode, (held, _) in brackets.items()}, runs


def print_edges(
    server: ServerProcess,
    targets: dict[str, str],
    ceiling: float,
    capacity: float,
    args: argparse.Namespace,
    top1: dict,
) -> None:
    edges, runs = highest_held(server, targets, ceiling, args, top1)
    print(f"\nEach mode's highest held rate, bisected in {args.edge_probes} runs between 0 and {ceiling:.0f}/s:")
    print_rows(runs)
    fixed = edges["fixed"]
    for mode, rate in edges.items():
        ratio = f", {rate / fixed:.2f}x the fixed model's" if fixed and mode != "fixed" else ""
        print(f"{mode}: {rate:.0f}/s ({rate / capacity:.2f}x capacity{ratio})")


def print_rows(rows: list[Row]) -> None:
    print("| mode | rate /s | goodput /s | within budget | p50 ms | p99 ms | refused | timeouts | late sends "
          "| mean expected top-1 | points answered |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        shown = ", ".join(f"{k} {v}" for k, v in sorted(r.points.items(), key=lambda kv: -kv[1])[:3])
        print(f"| {r.mode} | {r.rate:.0f} | {r.goodput:.1f} | {r.within:.1%} | {r.p50_ms:.1f} | {r.p99_ms:.1f} "
              f"| {r.refused} | {r.timeouts} | {r.late} | {r.top1:.2f} | {shown} |", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each open-loop run, as counted")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds at each run's rate before it counts")
    parser.add_argument("--multiples", default="0.5,1,2,3,4")
    parser.add_argument("--budget-ms", type=float, default=100.0)
    parser.add_argument("--edge-probes", type=int, default=0, help="bisecting runs per mode for its highest held rate")
    parser.add_argument("--images", type=Path, help="directory of JPEGs to send (default: the five benchmark JPEGs)")
    parser.add_argument("--over-budget", choices=("answer", "refuse"), default="answer", help="auto's over_budget")
    parser.add_argument("--rounds", type=int, default=1, help="times to run the grid, at the same rates")
    args = parser.parse_args()
    args.jpegs = jpegs_in(args.images) if args.images else load_images()
    multiples = [float(m) for m in args.multiples.split(",")]
    config = {
        "models": CLASSIFIERS,
        "default_model": PREFERRED_DEFAULT_MODEL,
        "log_level": "warning",
        "auto": {"default_budget_ms": args.budget_ms},  # the budget auto's ceiling keeps to
    }
    server = start_server(Path(tempfile.mkdtemp(prefix="overload-")), config)
    try:
        tradeoffs = httpx.get(server.url + "/v1/tradeoffs", timeout=10).json()
        top1 = {(p["model"], p["resolution"]): p["top1"] for p in tradeoffs["points"]}
        frontier = tradeoffs["auto"]["points"]
        default = (PREFERRED_DEFAULT_MODEL, 224)
        closed = closed_loop(server, "/classify", args.jpegs)
        capacity = closed.throughput
        print(f"{platform.processor() or platform.machine()}; default model {default[0]}@{default[1]}: "
              f"{capacity:.1f} img/s closed loop at concurrency 32 (p99 {closed.p99_ms:.1f} ms)")  # fmt: skip
        cheapest, path = single_point(frontier[0])
        floor = closed_loop(server, path, args.jpegs).throughput
        # Auto can hold no rate its cheapest point cannot: the multiples are measured against this too.
        print(f"auto's cheapest point {cheapest}: {floor:.1f} img/s closed loop "
              f"({floor / capacity:.2f}x the default model's)")  # fmt: skip
        names = [single_point(p)[0] for p in frontier]
        print(f"auto's frontier: {', '.join(names)}\n")
        auto_target = (
            f"/classify?model=auto&latency_budget_ms={args.budget_ms:g}&over_budget={args.over_budget}&top_k=1"
        )
        rates = [m * capacity for m in multiples]
        rounds = []
        for number in range(1, args.rounds + 1):
            if number > 1:
                print(f"\nRound {number} of {args.rounds}, at the same rates:")
            rounds.append(grid(server, rates, frontier, auto_target, args, top1))
        if args.rounds > 1:
            print_rounds(rounds)
        if args.edge_probes:
            targets = {"fixed": "/classify?top_k=1", "auto": auto_target, cheapest: path + "&top_k=1"}
            print_edges(server, targets, floor, capacity, args, top1)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
