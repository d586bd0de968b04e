"""Interleaved A/B of service settings: which configuration serves one model faster on this machine.

    python bench/config_ab.py --concurrency 32 --rounds 3 --duration 6 \\
        '{"b16": {}, "b4": {"default_batching": {"max_batch_size": 4}}}'

Each named configuration (a JSON object of service settings, merged over "serve only --model") gets
its own server, and all of them stay up for the whole run; the closed-loop load of `bench/load.py`
then visits them in turn, round after round, so that noise from other work on the machine spreads
over all of them alike. Only the server under load uses CPU; the others sit idle. A configuration
may also name `"_repo"`: a checkout of another commit (e.g. from `git worktree add`) to run the
service from, which is how a change is compared with the code before it, and `"_env"`: extra
environment variables for its server.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LOAD = REPO / "bench" / "load.py"
# tests/harness.py starts the servers and waits for them, as it does for the tests.
sys.path.insert(0, str(REPO / "tests"))

from harness import ServerProcess, start_server, wait_until_ready  # noqa: E402


def start(name: str, settings: dict[str, Any], model: str, workdir: Path, port: int) -> ServerProcess:
    """The server for one configuration, not yet ready: all of them load their models at once."""
    settings = dict(settings)
    repo = Path(settings.pop("_repo", REPO))
    extra_env = settings.pop("_env", {})
    config = {"models": [model], "default_model": model, "log_level": "warning", **settings}
    # store=None: a checkout given as "_repo" serves its own model_store/.
    return start_server(workdir / name, config, env=extra_env, wait_ready=False, store=None, repo=repo, port=port)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", help='JSON object: {"name": {settings...}, ...}')
    parser.add_argument("--model", default="mobilenet_v2_1.0_224_tv_int8")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per slice")
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--base-port", type=int, default=8600)
    args = parser.parse_args()
    configs: dict[str, dict[str, Any]] = json.loads(args.configs)

    results: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as workdir:
        servers = {
            name: (args.base_port + i, start(name, settings, args.model, Path(workdir), args.base_port + i))
            for i, (name, settings) in enumerate(configs.items())
        }
        try:
            for _, server in servers.values():
                wait_until_ready(server, timeout=180.0)
            for round_index in range(args.rounds):
                for name, (port, _) in servers.items():
                    out = subprocess.run(
                        [sys.executable, str(LOAD), "--url", f"http://127.0.0.1:{port}/classify",
                         "--concurrency", str(args.concurrency), "--duration", str(args.duration),
                         "--warmup", str(args.warmup), "--json"],
                        capture_output=True, text=True, check=True,
                    )  # fmt: skip
                    point = json.loads(out.stdout)
                    results[name].append(point)
                    print(
                        f"round {round_index} {name}: {point['throughput']:.1f} img/s, "
                        f"p50 {point['p50_ms']:.2f} ms, p99 {point['p99_ms']:.1f} ms, {point['errors']} errors",
                        flush=True,
                    )
        finally:
            for _, server in servers.values():
                server.stop(timeout=60.0)
    print(f"\nmodel {args.model}, concurrency {args.concurrency}, {args.rounds} x {args.duration} s per configuration")
    print("| configuration | median img/s | best img/s | median p50 ms | median p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, points in results.items():
        print(
            f"| {name} | {statistics.median(p['throughput'] for p in points):.1f} "
            f"| {max(p['throughput'] for p in points):.1f} | {statistics.median(p['p50_ms'] for p in points):.2f} "
            f"| {statistics.median(p['p99_ms'] for p in points):.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
