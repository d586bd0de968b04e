"""Rebuild the whole store from model_store/sources: `python -m model_store.build [variant ...]`.

The TFLite variants need only the build extra; the torchvision ones also need torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import mediapipe_variants, tflite_variants

STORE = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", type=Path, default=STORE, help="where to write the variants")
    parser.add_argument("--skip-torch", action="store_true", help="only the TFLite-derived variants")
    args = parser.parse_args()
    tflite_variants.build(args.store)
    mediapipe_variants.build(args.store)
    if args.skip_torch:
        return
    # torch is a heavy, build-only dependency: imported only when its variants are rebuilt.
    from . import quantize_int8, torchvision_v2

    torchvision_v2.build(args.store)
    quantize_int8.build(args.store)


if __name__ == "__main__":
    main()
