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
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
IMAGE = REPO / "tests" / "data" / "images" / "cat_720p.jpg"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="YAML settings file for the server")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=6, help="requests per client and model")
    args = parser.parse_args()

    port = free_port()
    argv = [sys.executable, "-m", "service.cli", "--port", str(port), "--log-level", "warning"]
    if args.config:
        argv += ["--config", str(args.config)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOBILENET_")}
    server = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            raise SystemExit("the server did not become ready")
        process = psutil.Process(server.pid)
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
                for _ in range(args.requests):
                    response = http.post(
                        endpoint, params={"model": name}, content=body, headers={"Content-Type": "image/jpeg"}
                    )
                    response.raise_for_status()

        for name, tasks in models:
            clients = [threading.Thread(target=client, args=(name, tasks)) for _ in range(args.concurrency)]
            for thread in clients:
                thread.start()
            for thread in clients:
                thread.join()
        done.set()
        sampler.join()
        print(f"command: python {' '.join(sys.argv)}")
        print(f"models: {len(models)} ({', '.join(name for name, _ in models)})")
        print(f"RSS idle {idle / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB")
    finally:
        server.terminate()
        server.wait(60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
