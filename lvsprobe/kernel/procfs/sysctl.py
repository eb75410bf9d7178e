"""/proc/sys/net/ipv4/vs/*: the IPVS sysctls of a namespace (docs/kernel/procfs.md#sysctls).

Most hold one decimal integer; `sync_threshold` holds two, tab-separated (threshold and
period). `est_cpulist` (6.2+; present in K6.12, absent in K6.1) is a cpulist such as
`0-3,8`: it is expanded into CPU numbers, `0-3,8` -> (0, 1, 2, 3, 8), and an empty list
(estimation stopped) gives (). Every other file must be whitespace-separated integers.
"""

from __future__ import annotations

import re
from itertools import islice
from pathlib import Path

from lvsprobe.errors import IPVSUnavailable, ParseError
from lvsprobe.kernel.procfs import _hex
from lvsprobe.kernel.procfs._read import read_proc_text, where_missing
from lvsprobe.kernel.procfs.limits import SYSCTL_MAX_BYTES

SYSCTL_DIR = "sys/net/ipv4/vs"
CPULISTS = frozenset({"est_cpulist"})
# Bigger than any NR_CPUS (8192); keeps a hostile `0-4000000000` from exhausting memory.
_MAX_CPU = 1 << 16
_RANGE = re.compile(r"([0-9]{1,6})(?:-([0-9]{1,6})(?::([0-9]{1,6})/([0-9]{1,6}))?)?")
_INT_LIMIT = (-(1 << 63), (1 << 64) - 1)
# K6.12 has 30 files; a directory with more than this many entries is not the kernel's.
MAX_FILES = 1024


def read_sysctls(root: Path) -> dict[str, tuple[int, ...]]:
    """Every file of `root/sys/net/ipv4/vs`, by name (sorted).

    `IPVSUnavailable` when the directory does not exist (IPVS not loaded, or no
    /proc/sys in this mount). Every entry must be a regular file (the kernel makes no
    other kind here): a FIFO or directory in its place is a `ParseError` naming it.
    """
    directory = root / SYSCTL_DIR
    try:
        names = sorted(p.name for p in islice(directory.iterdir(), MAX_FILES + 1))
    except FileNotFoundError as exc:
        raise IPVSUnavailable(where_missing(root, directory)) from exc
    except OSError as exc:
        raise ParseError(SYSCTL_DIR, None, None, f"cannot list {directory}: {exc}") from exc
    if len(names) > MAX_FILES:
        reason = f"more than {MAX_FILES} entries in {directory}: not the kernel's sysctls"
        raise ParseError(SYSCTL_DIR, None, None, reason)
    return {
        name: parse_sysctl(
            name,
            read_proc_text(
                root, f"{SYSCTL_DIR}/{name}", max_bytes=SYSCTL_MAX_BYTES, ipvs_file=False
            ),
        )
        for name in names
    }


def parse_sysctl(name: str, text: str) -> tuple[int, ...]:
    """The integers of one sysctl file (a cpulist for `est_cpulist`)."""
    source = f"{SYSCTL_DIR}/{name}"
    lines = _hex.split_lines(text)
    if len(lines) > 1:
        raise ParseError(source, 2, lines[1], "expected a single line")
    line = lines[0] if lines else ""
    try:
        if name in CPULISTS:
            return parse_cpulist(line)
        fields = line.split()
        if not fields:
            raise ValueError("expected a number, got an empty file")
        return tuple(_hex.decimal(tok, *_INT_LIMIT) for tok in fields)
    except ValueError as exc:
        raise ParseError(source, 1, line, str(exc)) from exc


def parse_cpulist(text: str) -> tuple[int, ...]:
    """`0-3,8` (the kernel's `%*pbl`, with the `a-b:n/m` group form) -> sorted CPU numbers."""
    cpus: set[int] = set()
    text = text.strip()
    for part in text.split(",") if text else ():
        match = _RANGE.fullmatch(part)
        if match is None:
            raise ValueError(f"bad cpulist element {part!r}")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else first
        used = int(match.group(3)) if match.group(3) else 1
        group = int(match.group(4)) if match.group(4) else 1
        if last < first or last >= _MAX_CPU or group == 0 or used > group:
            raise ValueError(f"bad cpulist range {part!r}")
        cpus.update(c for c in range(first, last + 1) if (c - first) % group < used)
    return tuple(sorted(cpus))
