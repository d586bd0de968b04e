"""Memory across load and unload: the server's resident memory after each of N load/classify/unload cycles.

A server in explicit model-control mode serves mobilenet_v1_0.25_128 throughout; the cycles load the
larger torchvision MobileNetV2 (fp32) through POST /v2/repository/models/{name}/load, classify one
image with it, and unload it. Resident memory (psutil, the server process) is read with the model
loaded and after each unload; memory that an unload did not give back would grow cycle after cycle.

    python bench/reload_memory.py [--cycles 20]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "bench"), str(REPO / "tests")]

from harness import STORE, start_server  # noqa: E402

RESIDENT = "mobilenet_v1_0.25_128"
CYCLED = "mobilenet_v2_1.0_224_tv"
SETTLE_SECONDS = 3.0  # the heap trim runs every 2 s by default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=20)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="reload-memory-"))
    store = workdir / "store"
    for name in (RESIDENT, CYCLED):
        shutil.copytree(STORE / name, store / name)
    config = {"models": [RESIDENT], "default_model": RESIDENT, "model_control_mode": "explicit", "log_level": "warning"}
    server = start_server(workdir / "server", config, store=store)
    image = (REPO / "tests" / "data" / "images" / "parrot.jpg").read_bytes()
    process = psutil.Process(server.process.pid)
    try:
        with server.client() as http:
            time.sleep(SETTLE_SECONDS)
            start = process.memory_info().rss / 2**20
            print(f"before the first load: {start:.0f} MiB\n\n| cycle | loaded MiB | after unload MiB |")
            print("| ---: | ---: | ---: |")
            after = []
            for cycle in range(1, args.cycles + 1):
                assert http.post(f"/v2/repository/models/{CYCLED}/load").status_code == 200
                answer = http.post(f"/classify?model={CYCLED}", content=image, headers={"content-type": "image/jpeg"})
                assert answer.status_code == 200
                loaded = process.memory_info().rss / 2**20
                assert http.post(f"/v2/repository/models/{CYCLED}/unload").status_code == 200
                time.sleep(SETTLE_SECONDS)
                after.append(process.memory_info().rss / 2**20)
                print(f"| {cycle} | {loaded:.0f} | {after[-1]:.0f} |", flush=True)
        print(f"\nafter unload: cycle 1 {after[0]:.0f} MiB, cycle {args.cycles} {after[-1]:.0f} MiB "
              f"({after[-1] - after[0]:+.0f} MiB); before the first load {start:.0f} MiB")  # fmt: skip
    finally:
        server.stop()


if __name__ == "__main__":
    main()
