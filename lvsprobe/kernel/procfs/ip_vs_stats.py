"""/proc/net/ip_vs_stats: the namespace's total counters and rates (`ip_vs_stats_show`).

Eras: K4.0 printed conns and packets as 32-bit `%8X` and the rates as `%8X`/`%16X`;
since 4.1 ("ipvs: use 64-bit rates in stats", present in K4.19, K6.1, K6.12) every
field is `%8LX`/`%16LX`. The widths are minimums, so the columns are read by whitespace
and every value is accepted up to 2**64 - 1 in both eras. See docs/kernel/procfs.md#ip_vs_stats.

The counters and the rates lines share one declared row, `STATS_ROW`, read exactly: two
lines need no columnar strategy.
"""

from __future__ import annotations

from pathlib import Path

from lvsprobe.errors import ParseError
from lvsprobe.kernel.procfs import _hex
from lvsprobe.kernel.procfs._format import Column, RowFormat
from lvsprobe.kernel.procfs._read import read_proc_text
from lvsprobe.kernel.procfs.limits import IP_VS_STATS_MAX_BYTES
from lvsprobe.model import Rates, Stats

SOURCE = "net/ip_vs_stats"
_HEADER = (
    ["Total", "Incoming", "Outgoing", "Incoming", "Outgoing"],
    ["Conns", "Packets", "Packets", "Bytes", "Bytes"],
)
RATES_HEADER = ["Conns/s", "Pkts/s", "Pkts/s", "Bytes/s", "Bytes/s"]
# ip_vs_stats_show (ip_vs_ctl.c), K4.1+: the counters, then the rates, each
#   "%8LX %8LX %8LX %16LX %16LX\n"
# (K4.0: "%8X %8X %8X %16LX %16LX" and "%8X %8X %8X %16X %16X"; read alike).
_NAMES = ("conns", "in_packets", "out_packets", "in_bytes", "out_bytes")
STATS_ROW = RowFormat(
    SOURCE,
    "{conns} {in_packets} {out_packets} {in_bytes} {out_bytes}",
    tuple(
        Column(name, (printf,), _hex.hex_number)
        for name, printf in zip(_NAMES, ("%8LX", "%8LX", "%8LX", "%16LX", "%16LX"), strict=True)
    ),
)


def read_ip_vs_stats(root: Path) -> tuple[Stats, Rates]:
    """Totals and rates from `root/net/ip_vs_stats`, read in one go (the file moves)."""
    return parse_ip_vs_stats(read_proc_text(root, SOURCE, max_bytes=IP_VS_STATS_MAX_BYTES))


def parse_ip_vs_stats(text: str, source: str = SOURCE) -> tuple[Stats, Rates]:
    """Parse /proc/net/ip_vs_stats: counters since the last zeroing, and de-scaled rates.

    Counters and rates both lag up to 2 s (docs/kernel/estimator.md#counters-lag-too).
    """
    lines = _hex.split_lines(text)
    expect_header(lines, 0, _HEADER, source)
    counters = stats_from_line(lines, 2, source)
    expect_empty(lines, 3, source)
    expect_header(lines, 4, (RATES_HEADER,), source)
    rates = rates_from_line(lines, 5, source)
    expect_end(lines, 6, source)
    return counters, rates


def expect_header(lines: list[str], index: int, rows: tuple[list[str], ...], source: str) -> None:
    """Check that lines[index:] start with the header `rows` (compared token by token)."""
    for offset, expected in enumerate(rows):
        line = _line(lines, index + offset, source, f"the header {' '.join(expected)!r}")
        if line.split() != expected:
            raise ParseError(
                source, index + offset + 1, line, f"expected the header {' '.join(expected)!r}"
            )


def expect_empty(lines: list[str], index: int, source: str) -> None:
    """The blank line the kernel prints between the counters and the rates block."""
    line = _line(lines, index, source, "an empty line")
    if line.strip():
        raise ParseError(source, index + 1, line, "expected an empty line before the rates")


def expect_end(lines: list[str], index: int, source: str) -> None:
    """Nothing may follow the rates line."""
    if len(lines) > index:
        raise ParseError(source, index + 1, lines[index], "unexpected line after the rates")


def stats_from_line(lines: list[str], index: int, source: str) -> Stats:
    """`conns inpkts outpkts inbytes outbytes`, five hex numbers."""
    return Stats(*_five_hex(lines, index, source))


def rates_from_line(lines: list[str], index: int, source: str) -> Rates:
    """`cps inpps outpps inBps outBps`, five hex numbers (bytes per second, not bits)."""
    return Rates(*_five_hex(lines, index, source))


def five_hex(fields: list[str]) -> list[int]:
    """The five `%LX` fields of a STATS_ROW; raises ValueError with the reason."""
    return STATS_ROW.decode(STATS_ROW.checked(fields))


def _five_hex(lines: list[str], index: int, source: str) -> list[int]:
    line = _line(lines, index, source, "5 hex numbers")
    try:
        return five_hex(line.split())
    except ValueError as exc:
        raise ParseError(source, index + 1, line, str(exc)) from exc


def _line(lines: list[str], index: int, source: str, what: str) -> str:
    if index >= len(lines):
        if not lines:
            raise ParseError(source, None, None, f"empty file: expected {what}")
        raise ParseError(source, index + 1, None, f"truncated: expected {what}")
    return lines[index]
