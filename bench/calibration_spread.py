"""How much the start-up calibration moves from one start to the next, and with it model=auto's frontier.

Starts a server on the classifiers of bench/overload.py `--starts` times, one after the other, and reads
`GET /v1/tradeoffs` from each: every point's `latency_ms` as calibrated, and the frontier auto chooses on.
Prints each start's frontier, then per point the spread of its latency over the starts ((max - min) /
median), the median and largest spread, and how many starts gave each frontier.

    python bench/calibration_spread.py [--starts 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "bench"), str(REPO / "tests")]

from harness import start_server  # noqa: E402
from overload import CLASSIFIERS  # noqa: E402

from service.config import PREFERRED_DEFAULT_MODEL  # noqa: E402

Key = tuple[str, int]


def one_start() -> dict:
    config = {"models": CLASSIFIERS, "default_model": PREFERRED_DEFAULT_MODEL, "log_level": "warning"}
    server = start_server(Path(tempfile.mkdtemp(prefix="calibration-")), config)
    try:
        return httpx.get(server.url + "/v1/tradeoffs", timeout=10).json()
    finally:
        server.stop()


def spread(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()
    latencies: dict[Key, list[float]] = {}
    frontiers: list[tuple[Key, ...]] = []
    for start in range(args.starts):
        points = one_start()["points"]
        timed = [p for p in points if p["latency_ms"] is not None]
        for p in timed:
            latencies.setdefault((p["model"], p["resolution"]), []).append(p["latency_ms"])
        cheapest_first = sorted(timed, key=lambda p: p["latency_ms"])
        front = tuple((p["model"], p["resolution"]) for p in cheapest_first if p["frontier"])
        frontiers.append(front)
        print(f"start {start + 1}: frontier " + ", ".join(f"{model}@{resolution}" for model, resolution in front))
    spreads = {key: spread(values) for key, values in latencies.items() if len(values) == args.starts}
    print(f"\n{'point':38s} {'median ms':>9s} {'spread':>7s}  latency_ms per start")
    for key in sorted(spreads, key=lambda k: statistics.median(latencies[k])):
        values = latencies[key]
        print(f"{key[0] + '@' + str(key[1]):38s} {statistics.median(values):9.2f} {spreads[key]:7.1%}  "
              + " ".join(f"{v:.2f}" for v in values))  # fmt: skip
    print(f"\nspread over the points: median {statistics.median(spreads.values()):.1%}, "
          f"largest {max(spreads.values()):.1%}")  # fmt: skip
    counts = Counter(frontiers)
    print(f"distinct frontiers: {len(counts)} in {args.starts} starts (starts per frontier: "
          + ", ".join(str(n) for n in counts.values()) + ")")  # fmt: skip
    always = set.intersection(*(set(f) for f in frontiers))
    sometimes = set().union(*(set(f) for f in frontiers)) - always
    print(f"on the frontier in every start: {len(always)} points; in some starts only: "
          + (", ".join(f"{m}@{r}" for m, r in sorted(sometimes)) or "none"))  # fmt: skip


if __name__ == "__main__":
    main()
