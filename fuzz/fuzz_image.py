"""Coverage-guided fuzzing of the image path with atheris: decode + preprocessing, and multipart parsing.

    python fuzz/fuzz_image.py --seconds 60 [--workdir DIR]

The first input byte picks the target: even -> the bytes are an image for `preprocess.prepare` under both crop
modes the store uses; odd -> the bytes are a multipart/form-data body read by `rest.read_images` through a
real Starlette request. A ServiceError below 500 is the documented answer to bad input; any other exception,
a 5xx ServiceError, or a wrong-shaped tensor is a finding, and atheris stops and writes the input under
--workdir as crash-*. Seeds: tests/data/images and tests/data/nasty. libFuzzer's final `DONE` line gives executions
and coverage (`cov`: edges reached in the instrumented service modules).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import atheris
from starlette.exceptions import HTTPException
from starlette.requests import Request

with atheris.instrument_imports():
    from service import preprocess, rest
    from service.errors import ServiceError
    from service.store import parse_variant

REPO = Path(__file__).resolve().parent.parent
SEED_DIRS = (REPO / "tests" / "data" / "images", REPO / "tests" / "data" / "nasty")
MAX_PIXELS = 4_000_000
BOUNDARY = b"fuzzboundary"
SPECS = [
    parse_variant(REPO / "model_store" / "mobilenet_v1_0.25_128").preprocess,  # TF-slim central crop
    parse_variant(REPO / "model_store" / "mobilenet_v2_1.0_224_tv_int8").preprocess,  # torchvision crop
]
RESOLUTION = 64


def _check_image(data: bytes) -> None:
    for spec in SPECS:
        try:
            prepared = preprocess.prepare(data, spec, RESOLUTION, MAX_PIXELS)
        except ServiceError as exc:
            if exc.status >= 500:
                raise
            return
        if prepared.tensor.shape != (3, RESOLUTION, RESOLUTION) or str(prepared.tensor.dtype) != "float32":
            raise AssertionError(f"bad tensor {prepared.tensor.shape} {prepared.tensor.dtype}")


async def _read_multipart(body: bytes) -> list[bytes]:
    sent = False

    async def receive() -> dict[str, object]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/classify",
        "headers": [(b"content-type", b"multipart/form-data; boundary=" + BOUNDARY)],
        "query_string": b"",
        # Starlette turns malformed multipart into HTTPException(400) only when an app is in the scope, as it
        # is in the server.
        "app": None,
    }
    return await rest.read_images(Request(scope, receive), max_images=8)


def _check_multipart(body: bytes) -> None:
    try:
        images = asyncio.run(_read_multipart(body))
    except ServiceError as exc:
        if exc.status >= 500:
            raise
        return
    except HTTPException as exc:
        if exc.status_code >= 500:
            raise
        return
    for image in images[:2]:
        _check_image(image)


def test_one_input(data: bytes) -> None:
    if not data:
        _check_image(data)
        return
    if data[0] % 2 == 0:
        _check_image(data[1:])
    else:
        _check_multipart(data[1:])


def _multipart_seed(image: bytes) -> bytes:
    return (
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + image + b"\r\n--" + BOUNDARY + b"--\r\n"
    )


def write_seeds(corpus: Path) -> int:
    corpus.mkdir(parents=True, exist_ok=True)
    count = 0
    for directory in SEED_DIRS:
        for path in sorted(directory.iterdir()):
            if path.suffix in (".py", ".json") or not path.is_file():
                continue
            data = path.read_bytes()
            if len(data) > 200_000:
                continue
            (corpus / f"img-{path.name}").write_bytes(b"\x00" + data)
            (corpus / f"mp-{path.name}").write_bytes(b"\x01" + _multipart_seed(data))
            count += 2
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--workdir", type=Path, default=Path("fuzz-work"))
    parser.add_argument("--max-len", type=int, default=65536)
    args, rest = parser.parse_known_args()
    corpus = args.workdir / "corpus"
    seeds = write_seeds(corpus)
    print(f"seeds: {seeds}", flush=True)
    argv = [
        sys.argv[0], str(corpus), f"-max_total_time={args.seconds}", "-timeout=20", f"-max_len={args.max_len}",
        "-rss_limit_mb=4096", f"-artifact_prefix={args.workdir}/", "-print_final_stats=1", *rest,
    ]  # fmt: skip
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
