"""How well model=auto predicts its answers' latency: per point chosen, the mean predicted and actual latency.

Starts a server on the classifiers of bench/overload.py, sends open-loop Poisson arrivals to
`/classify?model=auto` at a fixed rate (tests/open_loop.py), then reads the server's own metrics:
`mobilenet_auto_predicted_seconds` (the completion predicted when the point was chosen) beside
`mobilenet_auto_latency_seconds` (the same requests once answered).

    python bench/auto_prediction.py [--rate 90] [--seconds 12] [--budget-ms 100]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "bench"), str(REPO / "tests")]

from harness import LOOPBACK, start_server  # noqa: E402
from load import load_images  # noqa: E402
from open_loop import OpenLoop, run  # noqa: E402
from overload import CLASSIFIERS  # noqa: E402
from support import metric_samples  # noqa: E402

from service.config import PREFERRED_DEFAULT_MODEL  # noqa: E402


def by_point(samples: list[tuple[dict[str, str], float]]) -> dict[tuple[str, str], float]:
    return {(labels["model"], labels["resolution"]): value for labels, value in samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=90.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--budget-ms", type=float, default=100.0)
    args = parser.parse_args()
    config = {"models": CLASSIFIERS, "default_model": PREFERRED_DEFAULT_MODEL, "log_level": "warning"}
    server = start_server(Path(tempfile.mkdtemp(prefix="auto-prediction-")), config)
    try:
        bodies = [image.data for image in load_images()]
        target = f"/classify?model=auto&latency_budget_ms={args.budget_ms:g}&top_k=1"
        sent = run(OpenLoop(LOOPBACK, server.port, target, bodies, args.rate, args.seconds, seed=1))
        samples = metric_samples(httpx.get(server.url + "/metrics", timeout=10).text)
    finally:
        server.stop()
    count = by_point(samples["mobilenet_auto_predicted_seconds_count"])
    predicted = by_point(samples["mobilenet_auto_predicted_seconds_sum"])
    actual = by_point(samples["mobilenet_auto_latency_seconds_sum"])
    late = sum(1 for s in sent if s.status != 200 or s.latency > args.budget_ms / 1000.0)
    print(f"{args.rate:g}/s for {args.seconds:g} s: {len(sent)} sent, {late} over {args.budget_ms:g} ms or failed")
    print("| point | answers | mean predicted ms | mean actual ms (server) |")
    print("| --- | ---: | ---: | ---: |")
    for key in sorted(count, key=lambda k: -count[k]):
        if count[key]:
            print(f"| {key[0]}@{key[1]} | {count[key]:.0f} | {1000 * predicted[key] / count[key]:.1f} "
                  f"| {1000 * actual[key] / count[key]:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
