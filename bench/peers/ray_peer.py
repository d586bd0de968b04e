"""Ray Serve peer: one replica per core, each with a `@serve.batch` method that stacks requests into one ORT run.

Configuration follows Ray Serve's docs. "Dynamic Request Batching": `max_batch_size` a power of two (16),
`batch_wait_timeout_s` at its default 0.01 s. "Performance Tuning": reserve cores for each replica with
`ray_actor_options={"num_cpus": ...}` (1 here, so 2 replicas on 2 cores, each with ORT intra-op threads =
1; one replica with both cores and 2 threads was slower in a short run on this box), and raise
`max_ongoing_requests` for an async callable that queues (the guide's example value, 1000), else the proxy
holds the excess and retries it with exponential backoff of up to 0.5 s, which starved the replica at
64 clients. RAY_SERVE_THROUGHPUT_OPTIMIZED stays off: the guide reserves it for handlers that never
block, and an ORT run blocks. The dashboard is off: a monitoring UI, not part of serving.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any

import common
import numpy as np
import ray
from ray import serve
from starlette.requests import Request

# With this set to "0", Ray resolves a single machine's node address to loopback, so its internal gRPC
# servers listen on 127.0.0.1 instead of every interface. Ray reads it when it is imported.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
MAX_BATCH_SIZE = 16
BATCH_WAIT_TIMEOUT_S = 0.01
REPLICAS = common.cpu_cores()


def _replica_grpc_on_loopback() -> None:
    """Serve binds each replica's inter-deployment gRPC port to [::] with no setting to change it; rebind it
    to loopback (this is the replica process, before Serve opens the port). Requests take the same path."""
    from ray.serve._private import replica

    bind = getattr(replica, "add_port_to_grpc_server", None)
    if bind is None or getattr(bind, "loopback_only", False):
        return

    def loopback(server: Any, address: str) -> int:
        return bind(server, address.replace("[::]", "127.0.0.1"))

    loopback.loopback_only = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = loopback


@serve.deployment(
    num_replicas=REPLICAS,
    max_ongoing_requests=1000,
    ray_actor_options={"num_cpus": 1},
)
class Classifier:
    def __init__(self, variant_dir: str) -> None:
        _replica_grpc_on_loopback()
        self.model = common.load_session(variant_dir, common.intra_op_threads(REPLICAS))

    async def __call__(self, request: Request) -> dict[str, Any]:
        # Each request decodes its own image as it arrives; the batch method only stacks and runs.
        tensor = common.preprocess(await request.body(), self.model.manifest)
        return await self.classify(tensor)

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_TIMEOUT_S)
    async def classify(self, tensors: list[np.ndarray]) -> list[dict[str, Any]]:
        return common.classify_batch(self.model, tensors)


def main() -> None:
    parser = argparse.ArgumentParser(description="Ray Serve peer")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if os.environ.get(LOOPBACK_ENV) != "0":
        # Too late for this interpreter, which has imported Ray: start afresh with it set.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, LOOPBACK_ENV: "0"})
    ray.init(num_cpus=common.cpu_cores(), include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    app = Classifier.bind(str(common.variant_dir_from_env()))  # type: ignore[attr-defined]  # @serve.deployment adds it
    serve.run(app, name="classifier", route_prefix="/classify")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # Ray's threads may take the signal, which would not wake a plain wait(); poll the flag instead.
    while not stop.wait(0.5):
        pass
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
