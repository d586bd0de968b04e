"""Print every variant's cost: `python -m model_store.table [--repeats N] [--store DIR]`.

Parameters and mult-adds come from the manifests (computed from the graphs at build time);
latency is measured here with ONNX Runtime on this machine, median of N runs after a warm-up,
at batch 1 and 8, at the native resolution and the smaller ones the variant accepts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

STORE = Path(__file__).resolve().parent


def latency_ms(session: ort.InferenceSession, output: str, batch: int, size: int, repeats: int) -> float:
    image = np.random.default_rng(0).uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)
    session.run([output], {"image": image})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run([output], {"image": image})
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def rows(store: Path, repeats: int):
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    for manifest_path in sorted(store.glob("*/manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        session = ort.InferenceSession(
            str(manifest_path.parent / manifest["onnx"]), options, providers=["CPUExecutionProvider"]
        )
        # A variant without classes or DeepLab's scores (the MediaPipe ones): its first output.
        output = {"classify": "logits", "segment": "seg_logits"}.get(
            manifest["tasks"][0], session.get_outputs()[0].name
        )
        native = manifest["native_resolution"]
        sizes = [native] + sorted((r for r in manifest["resolutions"] if r < native), reverse=True)[:2]
        for size in sizes:
            yield (
                manifest["name"],
                manifest["precision"],
                f"{manifest['params'] / 1e6:.2f}",
                f"{manifest['macs'] * (size / native) ** 2 / 1e6:.0f}",
                f"{manifest['file_size'] / 2**20:.1f}",
                size,
                f"{latency_ms(session, output, 1, size, repeats):.1f}",
                f"{latency_ms(session, output, 8, size, max(1, repeats // 4)):.1f}",
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", type=Path, default=STORE)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    header = ("variant", "precision", "params (M)", "MACs (M)", "file (MiB)", "input", "batch 1 (ms)", "batch 8 (ms)")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows(args.store, args.repeats):
        print("| " + " | ".join(str(cell) for cell in row) + " |", flush=True)
    print(f"\nONNX Runtime {ort.__version__}, {os.cpu_count()} threads; MACs scale with (input / native)^2.")


if __name__ == "__main__":
    main()
