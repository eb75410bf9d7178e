"""A process of `lvsprobe` that dies in native code says where, on stderr (a replay run in
the lab once died of SIGSEGV in a C extension with nothing but its exit status)."""

from __future__ import annotations

import signal
import subprocess
import sys

# The command group's run replaced by a read of address 0: what main() runs it under.
CRASH = """
import ctypes
from lvsprobe import cli
cli.cli.main = lambda **_: ctypes.string_at(0)
cli.main()
"""


def test_a_native_crash_prints_the_python_stack() -> None:
    done = subprocess.run([sys.executable, "-c", CRASH], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGSEGV
    assert "Fatal Python error: Segmentation fault" in done.stderr
    assert 'File "<string>", line 4' in done.stderr  # the stack down to the crashing call
