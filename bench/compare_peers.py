"""Benchmark this service against peer serving frameworks on the same model, images and load.

For each model and target it starts the server on a free loopback port, waits until it answers, checks
that its top-1 answers agree with the other targets', drives it with `bench/load.py` at each concurrency
for a bounded time, stops it (with every process it spawned, even on failure), and prints one markdown
table per model plus our ratio to the best peer. Run it from the peers venv (bench/peers/README.md):

    /work/venv-peers/bin/python bench/compare_peers.py            # 2 s warm-up + 10 s per concurrency
    /work/venv-peers/bin/python bench/compare_peers.py --quick    # 1 s + 3 s, to check that all works
    /work/venv-peers/bin/python bench/compare_peers.py --rounds 3 # every target three times, in turn: medians
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from load import MULTIPART_PREFIX, RAW, Image, load_images  # bench/load.py: a script's own directory is importable

REPO = Path(__file__).resolve().parent.parent
# tests/harness.py's free port, as the tests take it; it imports nothing the peers' venv lacks.
sys.path.insert(0, str(REPO / "tests"))

from harness import free_port  # noqa: E402

PEERS_DIR = REPO / "bench" / "peers"
LOAD_SCRIPT = REPO / "bench" / "load.py"
STORE = REPO / "model_store"

DEFAULT_MODELS = ("mobilenet_v2_1.0_224_tv_int8", "mobilenet_v1_1.0_224")
DEFAULT_CONCURRENCY = (1, 8, 32, 64)
PRODUCT = "mobilenet-serve"
PEER_PACKAGES = (
    "ray",
    "bentoml",
    "litserve",
    "fastapi",
    "uvicorn",
    "onnxruntime",
    "pillow",
    "numpy",
    "httpx",
    "aiohttp",
)
PRODUCT_PACKAGES = ("mobilenet-serve", "fastapi", "uvicorn", "onnxruntime", "pillow", "numpy")
STOP_GRACE_S = 30.0
READY_POLL_S = 0.5


@dataclass(frozen=True)
class Target:
    name: str
    body: str  # how load.py posts the image: "raw" or "multipart:<field>"
    ready_timeout_s: float
    note: str


TARGETS = (
    Target(PRODUCT, RAW, 120.0, "this service: raw image/jpeg body, its own dynamic batcher, defaults"),
    Target("ray-serve", RAW, 180.0, "@serve.batch (16, 10 ms), 2 replicas x 1 ORT thread, raw body"),
    Target(
        "bentoml", "multipart:images", 120.0, "adaptive batching (32, 1000 ms), 2 workers x 1 ORT thread, multipart"
    ),
    Target("litserve", "multipart:file", 120.0, "batching (16, 10 ms), 2 workers x 1 ORT thread, multipart"),
    Target("naive-fastapi", RAW, 60.0, "one ORT run per request, 1 uvicorn worker x 2 ORT threads, raw body"),
)


@dataclass(frozen=True)
class Config:
    peers_python: Path
    product_python: Path
    log_dir: Path
    request_timeout_s: float


# ---------------------------------------------------------------------------------------------- processes


def _stat(pid: int) -> tuple[int, int, int, str] | None:
    """(ppid, session id, start time, state) of a live process, from /proc."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; the fields after its last ')' do not.
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[3]), int(fields[19]), fields[0]


def _family(root: int) -> set[tuple[int, int]]:
    """(pid, start time) of every live process descended from root or in its session.

    Ray and LitServe workers move to process groups of their own, and LitServe's outlive their parent,
    so neither the process group nor the parent chain alone finds them all; the session does, while the
    chain catches any that left it.
    """
    table: dict[int, tuple[int, int, int, str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := _stat(int(entry.name))) is not None:
            table[int(entry.name)] = info
    members = {pid for pid, (_, session, _, _) in table.items() if session == root}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _, _, _) in table.items():
            if ppid == parent and pid not in members:
                members.add(pid)
                frontier.append(pid)
    return {(pid, table[pid][2]) for pid in members if pid in table and table[pid][3] != "Z"}


def _still_running(pid: int, started: int) -> bool:
    info = _stat(pid)
    # The start time guards against signalling an unrelated process that reused the pid.
    return info is not None and info[2] == started and info[3] != "Z"


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def busy_cpu_seconds() -> float:
    """CPU seconds spent on anything but idle since boot, all CPUs together (steal included: a neighbour VM's)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def family_cpu_seconds(members: set[tuple[int, int]]) -> dict[tuple[int, int], float]:
    """CPU seconds (user + system) each still-running member has used so far."""
    used = {}
    for pid, started in members:
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        if int(fields[19]) == started:
            used[(pid, started)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return used


class Server:
    """A target's server process, started in a session of its own so that all it spawns can be found."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self._known: set[tuple[int, int]] = set()

    def running(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> dict[tuple[int, int], float]:
        self._known |= _family(self.proc.pid)
        return family_cpu_seconds(self._known)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the server and wait for it to clean up; SIGKILL whatever of its family is left."""
        self._known |= _family(self.proc.pid)
        if self.running():
            self.proc.terminate()
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if self.running():
                self._known |= _family(self.proc.pid)
            elif not any(_still_running(pid, started) for pid, started in self._known):
                break
            time.sleep(0.2)
        for pid, started in sorted(self._known):
            if _still_running(pid, started):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.running():
            self.proc.kill()
        self.proc.wait()
        self._log.close()


def launch(target: Target, variant: str, port: int, config: Config) -> Server:
    variant_dir = STORE / variant
    env = dict(os.environ)
    # Peers import bench/peers/common.py, in their own worker processes too.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PEERS_DIR), env.get("PYTHONPATH")]))
    env["PEER_VARIANT_DIR"] = str(variant_dir)
    python = str(config.peers_python)
    cwd = PEERS_DIR
    if target.name == PRODUCT:
        # `python -m service.cli` is the `mobilenet-serve` entry point, run on this checkout's code.
        argv = [str(config.product_python), "-m", "service.cli", "--port", str(port)]
        env.update({"MOBILENET_MODELS": variant, "MOBILENET_DEFAULT_MODEL": variant})
        env["PYTHONPATH"] = str(REPO)
        cwd = REPO
    elif target.name == "ray-serve":
        argv = [python, "ray_peer.py", "--port", str(port)]
    elif target.name == "bentoml":
        bentoml = Path(python).parent / "bentoml"
        argv = [str(bentoml), "serve", "bentoml_peer:Classifier", "--host", "127.0.0.1", "--port", str(port)]
        env.update({"BENTOML_HOME": str(config.log_dir / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"})
    elif target.name == "litserve":
        argv = [python, "litserve_peer.py", "--port", str(port)]
    elif target.name == "naive-fastapi":
        argv = [python, "naive_peer.py", "--port", str(port)]
    else:
        raise ValueError(f"unknown target {target.name}")
    log_path = config.log_dir / f"{variant}.{target.name}.log"
    return Server(target.name, argv, env, cwd, log_path)


@contextmanager
def running(target: Target, variant: str, config: Config) -> Iterator[tuple[Server, str]]:
    """The target's server and the URL of its /classify, served for the duration of the block."""
    port = free_port()
    server = launch(target, variant, port, config)
    try:
        url = f"http://127.0.0.1:{port}/classify"
        wait_ready(server, url, target, config)
        yield server, url
    finally:
        server.stop()


def httpx_kwargs(image: Image, body: str) -> dict[str, Any]:
    """The request load.py sends, for the one-off checks made here with httpx."""
    if body == RAW:
        return {"content": image.data, "headers": {"Content-Type": "image/jpeg"}}
    return {"files": {body.removeprefix(MULTIPART_PREFIX): (image.name, image.data, "image/jpeg")}}


def wait_ready(server: Server, url: str, target: Target, config: Config) -> None:
    """Ready means a real classification answered 200, which every framework understands the same way."""
    image = load_images()[0]
    deadline = time.monotonic() + target.ready_timeout_s
    last = "no answer"
    with httpx.Client(timeout=config.request_timeout_s) as client:
        while time.monotonic() < deadline:
            if not server.running():
                raise RuntimeError(f"{target.name} exited with {server.proc.returncode}:\n{server.log_tail()}")
            try:
                response = client.post(url, **httpx_kwargs(image, target.body))
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(READY_POLL_S)
    raise RuntimeError(f"{target.name} not ready after {target.ready_timeout_s:.0f} s ({last}):\n{server.log_tail()}")


# -------------------------------------------------------------------------------------------- measuring


def top1(url: str, target: Target, config: Config) -> list[int]:
    """The top-1 class id each target gives each benchmark image."""
    ids = []
    with httpx.Client(timeout=config.request_timeout_s) as client:
        for image in load_images():
            response = client.post(url, **httpx_kwargs(image, target.body))
            response.raise_for_status()
            body = response.json()
            # BentoML's batchable API answers each request with its slice of the batch: a one-item list.
            if isinstance(body, list):
                body = body[0]
            ids.append(int(body["results"][0]["predictions"][0]["class_id"]))
    return ids


def run_load(
    server: Server, url: str, target: Target, concurrency: int, args: argparse.Namespace, config: Config
) -> dict[str, Any]:
    """load.py's result, plus where the machine's CPU went meanwhile: server, load generator, or other work."""
    argv = [
        str(config.peers_python), str(LOAD_SCRIPT), "--url", url, "--body", target.body,
        "--concurrency", str(concurrency), "--duration", str(args.duration), "--warmup", str(args.warmup),
        "--timeout", str(config.request_timeout_s), "--json",
    ]  # fmt: skip
    limit = args.warmup + args.duration + 2 * config.request_timeout_s + 30
    server_before, busy_before = server.cpu_seconds(), busy_cpu_seconds()
    children_before, wall_before = os.times(), time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=limit, check=False)
    wall = time.monotonic() - wall_before
    busy, server_after, children_after = busy_cpu_seconds() - busy_before, server.cpu_seconds(), os.times()
    if done.returncode != 0:
        raise RuntimeError(f"load.py failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    # Processes that exited meanwhile drop out of the server's sum; a benchmark's servers keep theirs.
    server_cpu = sum(used - server_before.get(key, 0.0) for key, used in server_after.items())
    loadgen_cpu = (children_after.children_user - children_before.children_user) + (
        children_after.children_system - children_before.children_system
    )
    result["server_cores"] = server_cpu / wall
    result["loadgen_cores"] = loadgen_cpu / wall
    result["other_cores"] = max(0.0, busy - server_cpu - loadgen_cpu) / wall
    return result


def wait_for_quiet(server: Server, max_other: float, patience_s: float) -> None:
    """Wait, at most patience_s, until the rest of the machine uses no more than max_other cores (sampled
    over a second with the server idle), so a run does not start in the middle of someone else's work."""
    deadline = time.monotonic() + patience_s
    while True:
        server_before, busy_before, started = server.cpu_seconds(), busy_cpu_seconds(), time.monotonic()
        time.sleep(1.0)
        server_cpu = sum(used - server_before.get(key, 0.0) for key, used in server.cpu_seconds().items())
        other = (busy_cpu_seconds() - busy_before - server_cpu) / (time.monotonic() - started)
        if other <= max_other or time.monotonic() >= deadline:
            return
        print(f"  waiting for the machine to quiet down (other work: {other:.2f} cores)", file=sys.stderr)


def measure(
    server: Server, url: str, target: Target, concurrency: int, args: argparse.Namespace, config: Config
) -> dict[str, Any]:
    """One load run, repeated while other work on the machine took more than --max-other cores; the least
    disturbed run is kept, so a neighbour's burst does not pass for a target's figure."""
    best: dict[str, Any] | None = None
    for attempt in range(1, args.retries + 2):
        wait_for_quiet(server, args.max_other, args.quiet_wait)
        result = run_load(server, url, target, concurrency, args, config)
        result["attempts"] = attempt
        print(f"  {target.name:>15} c={concurrency:<3} {_brief(result)}", file=sys.stderr)
        if best is None or result["other_cores"] < best["other_cores"]:
            best = result
        if result["other_cores"] <= args.max_other:
            break
    assert best is not None
    best["attempts"] = attempt
    return best


def benchmark_target(
    target: Target, variant: str, args: argparse.Namespace, config: Config
) -> tuple[list[int] | None, dict[int, dict[str, Any]], str | None]:
    results: dict[int, dict[str, Any]] = {}
    answers = None
    try:
        with running(target, variant, config) as (server, url):
            answers = top1(url, target, config)
            for concurrency in args.concurrency:
                results[concurrency] = measure(server, url, target, concurrency, args, config)
    except Exception as exc:  # noqa: BLE001  one target's failure is reported, and the others still run
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"  {target.name:>15} FAILED: {exc}", file=sys.stderr)
        return answers, results, message
    return answers, results, None


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from a target's rounds at one concurrency: medians of the figures, every round's throughput."""
    combined = dict(runs[0])
    for key in ("throughput", "p50_ms", "p99_ms", "mean_ms", "server_cores", "loadgen_cores", "other_cores"):
        values = [run[key] for run in runs if run.get(key) is not None]
        combined[key] = statistics.median(values) if values else None
    combined["errors"] = sum(run["errors"] for run in runs)
    combined["attempts"] = sum(run["attempts"] for run in runs)
    combined["round_throughputs"] = [run["throughput"] for run in runs]
    return combined


def _brief(result: dict[str, Any]) -> str:
    return (
        f"{result['throughput']:.1f} img/s  p50 {_ms(result['p50_ms'])}  p99 {_ms(result['p99_ms'])}  "
        f"errors {result['errors']}  CPU cores: server {result['server_cores']:.2f} "
        f"load {result['loadgen_cores']:.2f} other {result['other_cores']:.2f}"
    )


# ---------------------------------------------------------------------------------------------- reporting


def _ms(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def _ratio(numerator: float | None, denominator: float | None) -> str:
    if not numerator or not denominator:
        return "-"
    return f"{numerator / denominator:.2f}x"


def model_report(variant: str, outcome: dict[str, Any], concurrency: Sequence[int], max_other: float) -> list[str]:
    lines = [
        f"### {variant}",
        "",
        (
            "CPU columns: cores busy on average during the run (warm-up included) in the server's processes, "
            "the load generator, and everything else on the machine (other work, VM steal); a high `other` "
            "marks a disturbed row. `runs`: load runs made, a run being repeated while `other` exceeded "
            f"{max_other:g} cores (the least disturbed is kept). With several rounds, each figure is the median "
            "of the rounds' and `runs` their sum."
        ),
        "",
        (
            "| target | concurrency | throughput (img/s) | each round (img/s) | p50 ms | p99 ms | errors "
            "| CPU server | CPU load gen | CPU other | runs |"
        ),
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, entry in outcome.items():
        if entry["error"] and not entry["results"]:
            lines.append(f"| {name} | - | failed: {entry['error']} | | | | | | | | |")
            continue
        for c in concurrency:
            r = entry["results"].get(c)
            if r is None:
                lines.append(f"| {name} | {c} | failed: {entry['error'] or 'no result'} | | | | | | | | |")
            else:
                rounds = ", ".join(f"{value:.1f}" for value in r["round_throughputs"])
                lines.append(
                    f"| {name} | {c} | {r['throughput']:.1f} | {rounds} | {_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} "
                    f"| {r['errors']} "
                    f"| {r['server_cores']:.2f} | {r['loadgen_cores']:.2f} | {r['other_cores']:.2f} | {r['attempts']} |"
                )
    lines += ["", f"Ours ({PRODUCT}) against the best peer at each concurrency (peers with 0 errors only):", ""]
    lines.append(
        "| concurrency | ours img/s | best peer img/s | throughput ratio | ours p50 ms | lowest peer p50 ms "
        "| p50 ratio | ours p99 ms | lowest peer p99 ms | p99 ratio |"
    )
    lines.append("| ---: | ---: | --- | ---: | ---: | --- | ---: | ---: | --- | ---: |")
    ours = outcome.get(PRODUCT, {}).get("results", {})
    for c in concurrency:
        peers = [
            (name, entry["results"][c])
            for name, entry in outcome.items()
            if name != PRODUCT and c in entry["results"] and entry["results"][c]["errors"] == 0
        ]
        mine = ours.get(c) or {}
        fastest = max(peers, key=lambda p: p[1]["throughput"], default=None)
        cells = [str(c), f"{mine['throughput']:.1f}" if mine else "-"]
        cells += [f"{fastest[1]['throughput']:.1f} ({fastest[0]})" if fastest else "-"]
        cells += [_ratio(mine.get("throughput"), fastest[1]["throughput"] if fastest else None)]
        for key in ("p50_ms", "p99_ms"):
            lowest = min((p for p in peers if p[1][key] is not None), key=lambda p: p[1][key], default=None)
            cells += [_ms(mine.get(key)), f"{_ms(lowest[1][key])} ({lowest[0]})" if lowest else "-"]
            cells += [_ratio(mine.get(key), lowest[1][key] if lowest else None)]
        lines.append("| " + " | ".join(cells) + " |")
    agreement = answers_report(outcome)
    if agreement:
        lines += ["", agreement]
    return lines


def answers_report(outcome: dict[str, Any]) -> str:
    answered = {name: entry["answers"] for name, entry in outcome.items() if entry["answers"]}
    if not answered:
        return ""
    reference_name, reference = next(iter(answered.items()))
    differing = [name for name, ids in answered.items() if ids != reference]
    if not differing:
        return f"Top-1 answers on the {len(reference)} images: identical across {', '.join(answered)}."
    return f"Top-1 answers DIFFER from {reference_name}'s for: {', '.join(differing)} ({answered})."


def versions(python: Path, packages: Sequence[str]) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for p in sys.argv[1:]:\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: out[p] = 'missing'\n"
        "print(json.dumps(out))"
    )
    done = subprocess.run([str(python), "-c", code, *packages], capture_output=True, text=True, timeout=60, check=False)
    return json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr.strip()[-200:]}


def header(args: argparse.Namespace, config: Config) -> list[str]:
    peer_versions = versions(config.peers_python, PEER_PACKAGES)
    product_versions = versions(config.product_python, PRODUCT_PACKAGES)
    load = os.getloadavg()
    return [
        "## Peer comparison",
        "",
        f"- command: `{' '.join([sys.executable, *sys.argv])}`",
        (
            f"- machine: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, "
            f"load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"
        ),
        (
            f"- load: closed loop, {args.warmup:g} s warm-up + {args.duration:g} s measured per concurrency, "
            f"{args.rounds} round(s) visiting the targets in turn (a fresh server each), "
            f"images {', '.join(p.name for p in load_images())} posted in turn; the load generator "
            "(bench/load.py, aiohttp) shares the CPUs with the server, equally for every target"
        ),
        "- product: " + ", ".join(f"{k} {v}" for k, v in product_versions.items()),
        "- peers: " + ", ".join(f"{k} {v}" for k, v in peer_versions.items()),
        "- targets: " + "; ".join(f"{t.name}: {t.note}" for t in TARGETS if t.name in args.targets),
        "",
    ]


# ------------------------------------------------------------------------------------------------- main


def default_product_python() -> Path:
    for candidate in (Path("/work/venv-svc/bin/python"), Path("/work/venv-bench/bin/python")):
        if candidate.exists():
            return candidate
    return Path(sys.executable)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="model_store variants")
    parser.add_argument(
        "--targets", nargs="+", default=[t.name for t in TARGETS], choices=[t.name for t in TARGETS], metavar="TARGET",
        help=f"subset of: {', '.join(t.name for t in TARGETS)}",
    )  # fmt: skip
    parser.add_argument("--concurrency", nargs="+", type=int, default=list(DEFAULT_CONCURRENCY))
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per concurrency")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per concurrency")
    parser.add_argument("--quick", action="store_true", help="1 s warm-up + 3 s measured: a smoke run")
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="visit every target this many times, in turn; the table shows medians and each round's throughput",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds")
    parser.add_argument(
        "--max-other", type=float, default=0.25,
        help="repeat a run in which other work on the machine used more CPU cores than this on average",
    )  # fmt: skip
    parser.add_argument("--retries", type=int, default=2, help="repeats allowed per disturbed run")
    parser.add_argument(
        "--quiet-wait", type=float, default=60.0,
        help="seconds to wait before each run for other work to drop under --max-other (then run anyway)",
    )  # fmt: skip
    parser.add_argument(
        "--product-python", type=Path, default=default_product_python(), help="the product's venv python"
    )
    parser.add_argument("--peers-python", type=Path, default=Path(sys.executable), help="the peers' venv python")
    parser.add_argument("--log-dir", type=Path, help="server logs (default: a new temporary directory)")
    parser.add_argument("--json-out", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 3.0, 1.0
    for variant in args.models:
        if not (STORE / variant / "manifest.json").is_file():
            parser.error(f"no model_store/{variant}/manifest.json")
    return args


def _terminate(signum: int, _frame: object) -> None:
    # Unwinds through the `finally` blocks, which stop the running server.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="compare-peers-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    config = Config(args.peers_python, args.product_python, log_dir, args.timeout)
    print(f"server logs in {log_dir}", file=sys.stderr)
    lines = header(args, config)
    raw: dict[str, Any] = {}
    for variant in args.models:
        outcome: dict[str, Any] = {}
        # Rounds visit every target in turn, so a slow spell of the machine spreads over all of them.
        for round_index in range(args.rounds):
            print(f"{variant}, round {round_index + 1} of {args.rounds}:", file=sys.stderr)
            for target in TARGETS:
                if target.name not in args.targets:
                    continue
                answers, results, error = benchmark_target(target, variant, args, config)
                entry = outcome.setdefault(target.name, {"answers": answers, "runs": {}, "error": None})
                entry["answers"] = entry["answers"] or answers
                entry["error"] = entry["error"] or error
                for concurrency, result in results.items():
                    entry["runs"].setdefault(concurrency, []).append(result)
        for entry in outcome.values():
            entry["results"] = {c: combine(runs) for c, runs in entry["runs"].items()}
        raw[variant] = outcome
        lines += [*model_report(variant, outcome, args.concurrency, args.max_other), ""]
    load = os.getloadavg()
    lines.append(f"Load average at the end: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}.")
    print("\n".join(lines))
    if args.json_out:
        args.json_out.write_text(json.dumps(raw, indent=2))
    failed = [f"{v}/{t}" for v, outcome in raw.items() for t, entry in outcome.items() if entry["error"]]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
