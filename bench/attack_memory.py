"""Where the memory an attack leaves behind sits: resident memory per process, warm and after the attack.

    python bench/attack_memory.py ['{"heap_trim_interval_seconds": 0}']

One server (V2 int8 and DeepLab, with the settings given as JSON) gets 15 s of honest load (56 clients,
as in bench/attack.py), rests 5 s, then 16 s of honest load beside the 8 hostile clients of every attack
class; printed: the resident and unique memory of the server and of each decoder process at start,
warm (after the honest phase) and 5 and 10 s after the attack.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "bench"), str(REPO / "tests")]

from attack import DEEPLAB, MODEL, _attack, attack_classes  # noqa: E402
from harness import ServerProcess, start_server  # noqa: E402
from load import load_images, run_load  # noqa: E402


def _by_process(server: ServerProcess) -> dict[str, tuple[int, int]]:
    """(RSS, USS) in MiB of the server and of each of its children."""
    main = psutil.Process(server.process.pid)
    found = {}
    for process in [main, *main.children(recursive=True)]:
        memory = process.memory_full_info()
        name = "server" if process.pid == main.pid else f"decoder {process.pid}"
        found[name] = (round(memory.rss / 2**20), round(memory.uss / 2**20))
    return found


async def _main(server: ServerProcess) -> None:
    print("start", _by_process(server))
    await run_load(server.url + "/classify", load_images(), 56, 15, 1.0)
    await asyncio.sleep(5)
    print("warm", _by_process(server))
    honest = run_load(server.url + "/classify", load_images(), 56, 15, 1.0)
    await asyncio.gather(honest, _attack(server.port, list(attack_classes()), 8, 16))
    for seconds in (5, 10):
        await asyncio.sleep(5)
        print(f"{seconds} s after the attack", _by_process(server))


def main() -> None:
    settings = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    config = {"models": [MODEL, DEEPLAB], "default_model": MODEL, "log_level": "warning", **settings}
    server = start_server(Path(tempfile.mkdtemp(prefix="attack-memory-")), config)
    try:
        asyncio.run(_main(server))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
