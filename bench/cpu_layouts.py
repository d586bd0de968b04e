"""How to spend two cores on decode + inference, measured in process with no HTTP.

    python bench/cpu_layouts.py [--model mobilenet_v2_1.0_224_tv_int8] [--images 320] [--rounds 3]

Part 1 prints ONNX Runtime's cost per image by batch size, with 1 and with all threads: CPU time
(process_time) and wall time. Part 2 pushes the same JPEGs through decode + preprocess + inference
laid out four ways, and prints images per second:

* `pool decode, then batch`: a decode pool as large as the machine prepares N images, then one
  session using every core runs them as a batch of N (the service before model instances);
* `pool decode overlapping the batch`: the same, with the next batch decoding during the run;
* `instances, 1 thread each`: one thread per core, each decoding an image and running it at once
  on a shared 1-thread session (the service's instances under load);
* `instances, all threads each`: the same on a session with every core, i.e. oversubscribed.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service.preprocess import prepare  # noqa: E402
from service.runtime import UINT8_WEIGHTS_OPTION, u8s8_saturates  # noqa: E402
from service.store import parse_variant  # noqa: E402

IMAGES = ("cat_720p.jpg", "parrot.jpg", "hot_dog.jpg", "pets.jpg", "owl.jpg")
CORES = os.cpu_count() or 1


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if u8s8_saturates():
        # The kernels the service and every peer run on this CPU, so the ceiling is theirs.
        options.add_session_config_entry(UINT8_WEIGHTS_OPTION, "1")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilenet_v2_1.0_224_tv_int8")
    parser.add_argument("--images", type=int, default=320, help="images per layout and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    variant = parse_variant(REPO / "model_store" / args.model)
    size = variant.native_resolution
    bodies = [(REPO / "tests" / "data" / "images" / name).read_bytes() for name in IMAGES]
    one, wide = session(variant.onnx_path, 1), session(variant.onnx_path, CORES)

    def tensor(index: int) -> np.ndarray:
        return prepare(bodies[index % len(bodies)], variant.preprocess, size, 10**9).tensor

    print(f"model {args.model}, {CORES} cores\n")
    print("| batch | threads | CPU ms/image | wall ms/image |\n| ---: | ---: | ---: | ---: |")
    for batch in (1, 8, 16, 32):
        x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
        for threads, sess in ((1, one), (CORES, wide)):
            sess.run(["logits"], {"image": x})
            runs, cpu, wall = max(2, 64 // batch), [], []
            for _ in range(args.rounds):
                c0, w0 = time.process_time(), time.perf_counter()
                for _ in range(runs):
                    sess.run(["logits"], {"image": x})
                cpu.append((time.process_time() - c0) / runs / batch * 1000)
                wall.append((time.perf_counter() - w0) / runs / batch * 1000)
            print(f"| {batch} | {threads} | {min(cpu):.2f} | {min(wall):.2f} |")

    def pooled(overlap: bool) -> None:
        with ThreadPoolExecutor(CORES) as pool:
            done, pending = 0, [pool.submit(tensor, i) for i in range(16)] if overlap else []
            while done < args.images:
                ready = [f.result() for f in pending] if overlap else list(pool.map(tensor, range(done, done + 16)))
                if overlap:
                    pending = [pool.submit(tensor, done + 16 + i) for i in range(16)]
                wide.run(["logits"], {"image": np.stack(ready)})
                done += 16

    def instances(sess: ort.InferenceSession) -> None:
        counter, lock = [0], threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    index = counter[0]
                    counter[0] += 1
                if index >= args.images:
                    return
                sess.run(["logits"], {"image": tensor(index)[None]})

        threads = [threading.Thread(target=work) for _ in range(CORES)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    layouts: dict[str, Callable[[], None]] = {
        "pool decode, then batch of 16": lambda: pooled(False),
        "pool decode overlapping the batch of 16": lambda: pooled(True),
        "instances, 1 thread each": lambda: instances(one),
        "instances, all threads each": lambda: instances(wide),
    }
    rates: dict[str, list[float]] = {name: [] for name in layouts}
    for _ in range(args.rounds):
        for name, layout in layouts.items():
            started = time.perf_counter()
            layout()
            rates[name].append(args.images / (time.perf_counter() - started))
    print("\n| layout | best img/s | every round |\n| --- | ---: | --- |")
    for name, values in rates.items():
        print(f"| {name} | {max(values):.1f} | {', '.join(f'{v:.0f}' for v in values)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
