"""What each hostile image of tests/hostile_images.py costs the preprocessing of one checkout of the service.

    python bench/hostile_decode.py [--repo PATH]

Runs `service.preprocess.prepare` (V2 int8's preprocessing, 224 pixels) on each image once, in this
process, with the `service` package of `--repo` (default: this checkout; a `git worktree` of another
commit shows what the images cost before a change), and prints the time and the outcome of each.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=REPO)
    args = parser.parse_args()
    sys.path[:0] = [str(args.repo), str(REPO / "tests")]
    from hostile_images import bmp_rle8, corrupt_png, jpeg_with_scans, png_with_chunks, tiff_with_strips

    from service.preprocess import prepare
    from service.store import parse_variant

    spec = parse_variant(args.repo / "model_store" / "mobilenet_v2_1.0_224_tv_int8").preprocess
    cases = {
        "BMP RLE8, 6320x6320, one pixel then end-of-line per row": bmp_rle8(6320, 6320),
        "progressive JPEG 1024x1024, 300 scans": jpeg_with_scans(300, 1024),
        "PNG with 1,000,000 empty chunks": png_with_chunks(1_000_000),
        "TIFF 1x1,900,000, one strip per row (PackBits)": tiff_with_strips(1_900_000),
        "PNG with 60 zeroed bytes mid-stream": corrupt_png(),
    }
    print("| image | bytes | time, outcome |\n| --- | ---: | --- |")
    for name, data in cases.items():
        started = time.perf_counter()
        try:
            prepare(data, spec, 224, 40_000_000)
            outcome = "accepted"
        except Exception as exc:
            outcome = str(getattr(exc, "status", type(exc).__name__))
        print(f"| {name} | {len(data):,} | {time.perf_counter() - started:.3f} s, {outcome} |")


if __name__ == "__main__":
    main()
