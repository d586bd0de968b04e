"""LitServe peer: LitAPI with server-side batching, decode -> batch -> predict -> unbatch -> encode.

Configuration follows LitServe's docs: `accelerator="cpu"` with `workers_per_device` = number of cores
(LitServer's guidance for CPU), ORT intra-op threads = cores / workers so the worker processes do not
oversubscribe the cores, `num_api_servers` left at its default (one per inference worker, the
recommended setting), and batching set on the LitAPI (`max_batch_size`, `batch_timeout`; LitServer's
own arguments for them are deprecated). LitServe gives no CPU numbers for these, so they match the Ray
Serve peer: 16 images, 10 ms. `fast_queue` (ZeroMQ) stays off: LitServe reserves it for >100 requests/s,
more than this model reaches on 2 cores.

LitServe hands `decode_request` a parsed JSON or form body, never raw bytes: clients post one multipart
`file` part per request.
"""

from __future__ import annotations

import argparse
from typing import Any

import common
import litserve as ls
import numpy as np

MAX_BATCH_SIZE = 16
BATCH_TIMEOUT_S = 0.01
WORKERS = common.cpu_cores()


class Classifier(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = common.load_session(common.variant_dir_from_env(), common.intra_op_threads(WORKERS))

    # Unannotated on purpose: LitServe reads the annotation to pick the body parser, and only the
    # default one parses multipart forms (the worker then gets the form, not a Request).
    def decode_request(self, request) -> np.ndarray:
        upload = request["file"]
        return common.preprocess(upload.file.read(), self.model.manifest)

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.run(x)

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return list(output)

    def encode_response(self, output: np.ndarray) -> dict[str, Any]:
        return common.response_body(self.model, common.postprocess(output, self.model.labels))


def main() -> None:
    parser = argparse.ArgumentParser(description="LitServe peer")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    api = Classifier(max_batch_size=MAX_BATCH_SIZE, batch_timeout=BATCH_TIMEOUT_S, api_path="/classify")
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=WORKERS)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False)


if __name__ == "__main__":
    main()
