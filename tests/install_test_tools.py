"""Fetch and check the test tools that are not Python packages; the tests themselves never download anything.

    python tests/install_test_tools.py

Run after `pip install -e '.[test]'` (the README's test command runs both). It fetches perf_analyzer into
~/.cache/mobilenet-serve (tests/helpers_perf_analyzer.py says how and why), and checks Debian's chromium
(tests/browser) and prometheus with promtool (tests/deploy), which need root to install: `.ci/run`
installs them with apt-get. Missing ones are named with the command that installs them; their tests skip
with the same message, and fail under CI.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_perf_analyzer import PerfAnalyzerUnavailable, perf_analyzer_command  # noqa: E402

DEBIAN_TOOLS = {"chromium": "chromium", "promtool": "prometheus", "prometheus": "prometheus"}


def main() -> int:
    print("fetching perf_analyzer (the V2 protocol's load generator) if it is not cached...", flush=True)
    try:
        print(f"perf_analyzer: {' '.join(perf_analyzer_command(fetch=True))}")
    except PerfAnalyzerUnavailable as exc:
        print(f"perf_analyzer: could not be fetched: {exc}", file=sys.stderr)
        return 1
    missing = sorted({package for tool, package in DEBIAN_TOOLS.items() if shutil.which(tool) is None})
    for tool in DEBIAN_TOOLS:
        print(f"{tool}: {shutil.which(tool) or 'missing'}")
    if missing:
        print(f"install with: sudo apt-get install {' '.join(missing)} (their tests skip until then)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
