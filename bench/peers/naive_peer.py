"""Baseline: a plain FastAPI app that runs ONNX Runtime once per request, with no batching.

FastAPI runs a `def` endpoint in its thread pool, so concurrent requests decode in parallel and share one
session (ORT sessions are thread-safe). One uvicorn worker, ORT with one thread per core: FastAPI's
"run it with uvicorn" default, the app most people write first.
"""

from __future__ import annotations

import argparse
from typing import Annotated, Any

import common
import uvicorn
from fastapi import Body, FastAPI

MODEL = common.load_session(common.variant_dir_from_env(), common.intra_op_threads())
app = FastAPI()


@app.post("/classify")
def classify(image: Annotated[bytes, Body(media_type="image/jpeg")]) -> dict[str, Any]:
    tensor = common.preprocess(image, MODEL.manifest)
    return common.classify_batch(MODEL, [tensor])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description="naive FastAPI + ONNX Runtime peer")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # uvicorn's defaults otherwise (access log on), as the other targets keep theirs.
    uvicorn.run(app, host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
