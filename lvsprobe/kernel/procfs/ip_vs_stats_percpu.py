"""/proc/net/ip_vs_stats_percpu: per-CPU counters, the `~` total row, rates.

Eras: K4.0 printed conns, packets and rates with `%8X`/`%16X` (32-bit); K6.1 and K6.12
use `%8LX`/`%16LX`. Read by whitespace, both parse alike (docs/kernel/procfs.md#ip_vs_stats_percpu).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lvsprobe.errors import ParseError
from lvsprobe.kernel.procfs import _hex
from lvsprobe.kernel.procfs._read import read_proc_text
from lvsprobe.kernel.procfs.ip_vs_stats import (
    RATES_HEADER,
    expect_empty,
    expect_end,
    expect_header,
    five_hex,
    rates_from_line,
)
from lvsprobe.kernel.procfs.limits import IP_VS_STATS_PERCPU_MAX_BYTES
from lvsprobe.model import Rates, Stats

SOURCE = "net/ip_vs_stats_percpu"
_HEADER = (
    ["Total", "Incoming", "Outgoing", "Incoming", "Outgoing"],
    ["CPU", "Conns", "Packets", "Packets", "Bytes", "Bytes"],
)
# NR_CPUS is at most 8192 on any kernel config; the CPU number is printed `%3X`.
_MAX_CPU = 1 << 16


@dataclass(frozen=True)
class PerCpuStats:
    """Per-CPU rows (live raw counters, never zeroed), the `~` total and the rates.

    `per_cpu[i]` is the row of CPU `cpu_ids[i]` (possible CPUs, in file order). The total
    row is the estimator's snapshot minus the zero point, like /proc/net/ip_vs_stats, so
    it equals the sum of the rows only before any zeroing and within the 2 s lag.
    """

    per_cpu: tuple[Stats, ...]
    total: Stats
    rates: Rates
    cpu_ids: tuple[int, ...] = ()


def read_ip_vs_stats_percpu(root: Path) -> PerCpuStats:
    """Parse `root/net/ip_vs_stats_percpu`, read in one go."""
    return parse_ip_vs_stats_percpu(
        read_proc_text(root, SOURCE, max_bytes=IP_VS_STATS_PERCPU_MAX_BYTES)
    )


def parse_ip_vs_stats_percpu(text: str, source: str = SOURCE) -> PerCpuStats:
    """Parse /proc/net/ip_vs_stats_percpu (rows `%3X` CPU numbers, then `  ~` total)."""
    lines = _hex.split_lines(text)
    expect_header(lines, 0, _HEADER, source)
    rows: list[Stats] = []
    cpu_ids: list[int] = []
    index = 2
    while True:
        if index >= len(lines):
            raise ParseError(source, index + 1, None, "truncated: expected the '~' total row")
        line = lines[index]
        fields = line.split()
        try:
            if not fields:
                raise ValueError("expected a CPU row or the '~' total row")
            values = five_hex(fields[1:])
            if fields[0] == "~":
                total = Stats(*values)
                break
            cpu = _hex.hex_number(fields[0], _MAX_CPU)
            if cpu_ids and cpu <= cpu_ids[-1]:
                raise ValueError(f"CPU {cpu} after CPU {cpu_ids[-1]}: numbers must increase")
        except ValueError as exc:
            raise ParseError(source, index + 1, line, str(exc)) from exc
        cpu_ids.append(cpu)
        rows.append(Stats(*values))
        index += 1
    expect_empty(lines, index + 1, source)
    expect_header(lines, index + 2, (RATES_HEADER,), source)
    rates = rates_from_line(lines, index + 3, source)
    expect_end(lines, index + 4, source)
    return PerCpuStats(tuple(rows), total, rates, tuple(cpu_ids))
