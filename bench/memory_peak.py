"""Peak resident memory of the service with every configured model under concurrent load.

    python bench/memory_peak.py [--config k8s-like.yaml] [--concurrency 16] [--requests 6]

Starts `python -m service.cli` (with `--config` if given, otherwise every variant in the store with
the default settings), waits until it is ready, then hits each loaded model in turn with
`--concurrency` clients sending `--requests` large photos each (`/segment` for segmentation models,
`/classify` for the others), and prints the server's RSS when idle and at its peak, sampled every
50 ms. ONNX Runtime keeps the activation memory of the largest batch each session has run, so
the peak is reached once every model has seen a full batch: the figure a pod's memory limit
must cover.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
IMAGE = REPO / "tests" / "data" / "images" / "cat_720p.jpg"
# tests/harness.py starts the server and waits for it, as it does for the tests.
sys.path.insert(0, str(REPO / "tests"))

from harness import ServerProcess, start_server  # noqa: E402


def measure(server: ServerProcess, concurrency: int, requests: int) -> None:
    url = server.url
    process = psutil.Process(server.process.pid)
    idle = peak = process.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    listing = httpx.get(url + "/v1/models", timeout=10).json()["models"]
    models = [(m["name"], m["manifest"]["tasks"]) for m in listing if m["loaded"]]
    body = IMAGE.read_bytes()

    def client(name: str, tasks: list[str]) -> None:
        endpoint = "/segment" if "segment" in tasks else "/classify"
        with httpx.Client(base_url=url, timeout=300) as http:
            for _ in range(requests):
                response = http.post(
                    endpoint, params={"model": name}, content=body, headers={"Content-Type": "image/jpeg"}
                )
                response.raise_for_status()

    for name, tasks in models:
        clients = [threading.Thread(target=client, args=(name, tasks)) for _ in range(concurrency)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
    done.set()
    sampler.join()
    print(f"command: python {' '.join(sys.argv)}")
    print(f"models: {len(models)} ({', '.join(name for name, _ in models)})")
    print(f"RSS idle {idle / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="YAML settings file for the server")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=6, help="requests per client and model")
    args = parser.parse_args()

    config = (yaml.safe_load(args.config.read_text()) or {}) if args.config else {}
    with tempfile.TemporaryDirectory(prefix="memory-peak-") as workdir:
        # store=None: the store the file names, if any, else the bundled one, as the file alone would give.
        server = start_server(Path(workdir), {**config, "log_level": "warning"}, timeout=180, store=None)
        try:
            measure(server, args.concurrency, args.requests)
        finally:
            server.stop(timeout=60.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
