"""An imported entry replaces the old one in one step: a server in poll mode never finds the name missing."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from model_store.build.store_place import place


def entry(path: Path, content: str) -> Path:
    path.mkdir()
    (path / "manifest.json").write_text(content)
    return path


def test_a_new_entry_is_moved_in(tmp_path: Path) -> None:
    place(entry(tmp_path / "work", "new"), tmp_path / "model")
    assert (tmp_path / "model" / "manifest.json").read_text() == "new"
    assert not (tmp_path / "work").exists()


def test_a_replaced_entry_is_swapped_out_to_where_the_new_one_was(tmp_path: Path) -> None:
    target = entry(tmp_path / "model", "old")
    place(entry(tmp_path / "work", "new"), target)
    assert (target / "manifest.json").read_text() == "new"
    assert (tmp_path / "work" / "manifest.json").read_text() == "old"


# Counts, in a process of its own (a thread would rarely run between two renames), how often the file is missing.
WATCHER = """
import os, sys
path, stop, missing = sys.argv[1], sys.argv[2], 0
while not os.path.exists(stop):
    missing += not os.path.exists(path)
print(missing)
"""


def test_the_name_never_goes_missing_while_entries_are_replaced(tmp_path: Path) -> None:
    # Moving the old entry aside first left a gap that this watcher saw about ten thousand times in 2,000 swaps.
    target = entry(tmp_path / "model", "0")
    stop = tmp_path / "stop"
    watcher = subprocess.Popen(
        [sys.executable, "-c", WATCHER, str(target / "manifest.json"), str(stop)], stdout=subprocess.PIPE, text=True
    )
    try:
        time.sleep(0.2)
        for round_ in range(1, 2000):
            place(entry(tmp_path / f"work{round_}", str(round_)), target)
    finally:
        stop.touch()
        missing = int(watcher.communicate(timeout=30)[0])
    assert (target / "manifest.json").read_text() == "1999"
    assert missing == 0
