"""Exit codes of every lvsprobe command, in one place."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1  # an LvsprobeError: one line on stderr
    USAGE = 2  # bad flags (click's own code)
    CHECK_FAILED = 3  # the run completed, and what it checked did not hold
    INTERRUPTED = 130
