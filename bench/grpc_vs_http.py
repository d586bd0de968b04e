"""The Open Inference Protocol over gRPC against V2 HTTP with binary tensors, on one server, in one run.

    python bench/grpc_vs_http.py [--model NAME] [--window-ms 3000] [--rounds 2] [--concurrency 1 16]

One server (`python -m service.cli`, only the model under test) serves both protocols. perf_analyzer,
Triton's C++ load generator, drives it the same way over each: a closed loop of N concurrent
synchronous requests, measured over three windows of `--window-ms` each (any spread accepted, so the
run is bounded), sending binary tensors over HTTP (its default) and raw contents over gRPC. Two inputs: `image`, an FP32
tensor already preprocessed ([1, 3, S, S], random values), which puts the transfer of 4 bytes a
value on the protocol; and `image_bytes`, one JPEG the server decodes and preprocesses. The protocols
alternate within each round, so load from other processes on the machine hits both alike; each
figure is the median over rounds. Printed: throughput, p50 and p99 latency as perf_analyzer measures
them on the client, the CPU time the server process (its decoders included) and perf_analyzer spent
per request (they share the machine's cores), and gRPC's ratio to HTTP.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
# tests/harness.py runs the server and tests/helpers_perf_analyzer.py finds perf_analyzer, as for the tests.
sys.path.insert(0, str(REPO / "tests"))

from harness import free_port, running_server  # noqa: E402
from helpers_perf_analyzer import perf_analyzer_command  # noqa: E402

from service.store import parse_variant  # noqa: E402

STORE = REPO / "model_store"
JPEG = REPO / "tests" / "data" / "images" / "parrot.jpg"
PROTOCOLS = ("http", "grpc")


def input_files(workdir: Path, size: int) -> dict[str, Path]:
    values = np.random.default_rng(0).standard_normal(3 * size * size).astype(np.float32).round(3).tolist()
    jpeg = JPEG.read_bytes()
    # perf_analyzer sends b64 content as the tensor's raw bytes: one length-prefixed BYTES element.
    raw = base64.b64encode(len(jpeg).to_bytes(4, "little") + jpeg).decode()
    documents = {
        "image": {"image": {"content": values, "shape": [3, size, size]}},
        "image_bytes": {"image_bytes": {"b64": raw, "shape": [1]}},
    }
    files = {}
    for name, data in documents.items():
        files[name] = workdir / f"{name}.json"
        files[name].write_text(json.dumps({"data": [data]}), encoding="utf-8")
    return files


def measure(command: list[str], csv_path: Path, server: psutil.Process) -> dict[str, float]:
    """perf_analyzer's figures, and the CPU time the server and perf_analyzer each spent per request."""
    server_before, client_before = _cpu(server.cpu_times()), _cpu(resource.getrusage(resource.RUSAGE_CHILDREN))
    started = time.monotonic()
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    elapsed = time.monotonic() - started
    if run.returncode != 0:
        raise SystemExit(f"perf_analyzer failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}")
    with csv_path.open(encoding="utf-8") as handle:
        row = next(csv.DictReader(handle))
    throughput = float(row["Inferences/Second"])
    # Requests over the whole run (warm-up and every window), at the measured rate: an estimate for the CPU share.
    requests = throughput * elapsed
    return {
        "throughput": throughput,
        "p50_ms": float(row["p50 latency"]) / 1000.0,
        "p99_ms": float(row["p99 latency"]) / 1000.0,
        "server_cpu_ms": (_cpu(server.cpu_times()) - server_before) * 1000.0 / requests,
        "client_cpu_ms": (_cpu(resource.getrusage(resource.RUSAGE_CHILDREN)) - client_before) * 1000.0 / requests,
    }


def _cpu(times: Any) -> float:
    """User plus system seconds, of psutil's cpu_times() or of a getrusage()."""
    if hasattr(times, "ru_utime"):
        return float(times.ru_utime + times.ru_stime)
    return float(
        times.user + times.system + getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenet_v2_1.0_224_tv_int8")
    parser.add_argument("--window-ms", type=int, default=3000, help="perf_analyzer's measurement interval")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="the server's intra_op_threads")
    args = parser.parse_args()

    size = parse_variant(STORE / args.model).native_resolution
    perf_analyzer = perf_analyzer_command()
    grpc_port = free_port()
    config = {"models": [args.model], "default_model": args.model, "intra_op_threads": args.threads,
              "calibration_seconds": 0, "grpc_port": grpc_port}  # fmt: skip
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; model {args.model} at {size} px; "
          f"{args.rounds} rounds, medians; perf_analyzer on the same machine; load average "
          + ", ".join(f"{x:.2f}" for x in os.getloadavg()))  # fmt: skip
    results: dict[tuple[str, int, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as scratch, running_server(Path(scratch) / "server", config) as server:
        files = input_files(Path(scratch), size)
        urls = {"http": server.url.removeprefix("http://"), "grpc": f"127.0.0.1:{grpc_port}"}
        for round_index in range(args.rounds):
            for input_name, data in files.items():
                for concurrency in args.concurrency:
                    for protocol in PROTOCOLS if round_index % 2 == 0 else PROTOCOLS[::-1]:
                        csv_path = Path(scratch) / f"{protocol}.csv"
                        command = [
                            *perf_analyzer, "-m", args.model, "-u", urls[protocol], "-i", protocol,
                            "--input-data", str(data), "--concurrency-range", str(concurrency),
                            "--measurement-interval", str(args.window_ms), "--stability-percentage", "10000",
                            "--max-trials", "3", "-f", str(csv_path),
                        ]  # fmt: skip
                        figures = measure(command, csv_path, psutil.Process(server.process.pid))
                        results.setdefault((input_name, concurrency, protocol), []).append(figures)
    print("load average (1, 5, 15 min) at the end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"\n{'input':<12} {'conc':>4} {'protocol':<9} {'infer/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'server CPU ms/req':>18} {'client CPU ms/req':>18}")  # fmt: skip
    for input_name in files:
        for concurrency in args.concurrency:
            medians = {}
            for protocol in PROTOCOLS:
                runs = results[(input_name, concurrency, protocol)]
                medians[protocol] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
                m = medians[protocol]
                print(f"{input_name:<12} {concurrency:>4} {protocol:<9} {m['throughput']:>9.1f} {m['p50_ms']:>8.2f} "
                      f"{m['p99_ms']:>8.2f} {m['server_cpu_ms']:>18.2f} {m['client_cpu_ms']:>18.2f}")  # fmt: skip
            ratio = {key: medians["grpc"][key] / medians["http"][key] for key in medians["http"]}
            r = ratio
            print(f"{input_name:<12} {concurrency:>4} {'grpc/http':<9} {r['throughput']:>8.2f}x {r['p50_ms']:>7.2f}x "
                  f"{r['p99_ms']:>7.2f}x {r['server_cpu_ms']:>17.2f}x {r['client_cpu_ms']:>17.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
