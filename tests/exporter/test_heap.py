"""One malloc arena for the exporter's threads (heap.py): glibc's own report, malloc_stats,
counts the arenas after threads have allocated. Before, each scrape thread got its own, and a
second pool thread raised the peak RSS by a whole scrape's transient."""

from __future__ import annotations

import subprocess
import sys

import pytest

_THREADS_ALLOCATE = """
import ctypes, sys, threading
from lvsprobe.exporter.heap import one_arena
if sys.argv[1] == "one":
    one_arena()
def allocate():
    kept = [bytearray(1000) for _ in range(20000)]
    del kept
threads = [threading.Thread(target=allocate) for _ in range(3)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
ctypes.CDLL(None).malloc_stats()
"""


def _arenas(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _THREADS_ALLOCATE, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return sum(line.startswith("Arena ") for line in done.stderr.splitlines())


def test_the_scrape_threads_share_one_arena() -> None:
    if _arenas("default") < 2:
        pytest.skip("this libc gives threads no arenas of their own (not glibc)")
    assert _arenas("one") == 1
