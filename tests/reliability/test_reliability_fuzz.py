"""A bounded atheris run of fuzz/fuzz_image.py (decode, preprocessing, multipart parsing): it must find nothing."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from support import REPO

SECONDS = 45


def test_image_path_fuzzing_finds_no_crash(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "fuzz" / "fuzz_image.py"), "--seconds", str(SECONDS), "--workdir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=SECONDS + 120,
    )
    log = result.stdout + result.stderr
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-")))
    assert result.returncode == 0 and not crashes, (crashes, log[-4000:])
    done = re.search(r"#(\d+)\s+DONE\s+cov: (\d+)", log)
    assert done is not None, log[-2000:]
    assert int(done.group(1)) > 1000 and int(done.group(2)) > 500
