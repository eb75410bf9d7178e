"""/proc/net/ip_vs_stats and ip_vs_stats_percpu: golden, K4.0/6.12 samples, hostile files."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvsprobe.errors import IPVSUnavailable, ParseError
from lvsprobe.kernel.procfs.ip_vs_stats import parse_ip_vs_stats, read_ip_vs_stats
from lvsprobe.kernel.procfs.ip_vs_stats_percpu import (
    parse_ip_vs_stats_percpu,
    read_ip_vs_stats_percpu,
)
from lvsprobe.model import Rates, Stats

from .ipvsadm_views import stats_exact


def test_golden_totals_are_the_sum_of_ipvsadm_services(nat_proc: Path, nat_ipvsadm: Path) -> None:
    totals, rates = read_ip_vs_stats(nat_proc)
    assert totals == Stats(0x1A8, 0x8C1, 0x8EF, 0x2346F, 0x291CE)
    assert rates == Rates(0x16, 0x72, 0x74, 0x1CD5, 0x213F)
    # The captured services account for every connection, packet and byte.
    services = [
        v
        for (_, dest), v in stats_exact(nat_ipvsadm / "ipvsadm_-Ln_--exact_--stats.txt").items()
        if not dest
    ]
    assert tuple(map(sum, zip(*services, strict=True))) == (
        totals.conns,
        totals.in_pkts,
        totals.out_pkts,
        totals.in_bytes,
        totals.out_bytes,
    )


def test_golden_percpu(nat_proc: Path) -> None:
    percpu = read_ip_vs_stats_percpu(nat_proc)
    totals, rates = read_ip_vs_stats(nat_proc)
    assert percpu.cpu_ids == (0, 1)
    assert percpu.total == totals and percpu.rates == rates
    # Never zeroed and read in one go: the rows add up to the `~` total.
    assert Stats(*map(sum, zip(*(vars_of(s) for s in percpu.per_cpu), strict=True))) == totals


def vars_of(stats: Stats) -> tuple[int, ...]:
    return (stats.conns, stats.in_pkts, stats.out_pkts, stats.in_bytes, stats.out_bytes)


# K4.0: "%8X %8X %8X %16LX %16LX" counters and 32-bit rates; same columns.
K40 = (
    "   Total Incoming Outgoing         Incoming         Outgoing\n"
    "   Conns  Packets  Packets            Bytes            Bytes\n"
    "FFFFFFFF FFFFFFFF       10 FFFFFFFFFFFFFFFF                0\n"
    "\n"
    " Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s\n"
    "       4       1F       18         FFFFFFFF           1C2D3E\n"
)
# K6.12: 64-bit values wider than the minimum width still parse by whitespace.
K612 = K40.replace("FFFFFFFF FFFFFFFF       10", "1FFFFFFFFF 2FFFFFFFFF 10")


def test_k40_and_k612_widths() -> None:
    totals, rates = parse_ip_vs_stats(K40)
    assert totals == Stats(2**32 - 1, 2**32 - 1, 16, 2**64 - 1, 0)
    assert rates.in_bytes_per_s == 2**32 - 1
    assert parse_ip_vs_stats(K612)[0].conns == 0x1FFFFFFFFF


PERCPU_612 = (
    "       Total Incoming Outgoing         Incoming         Outgoing\n"
    "CPU    Conns  Packets  Packets            Bytes            Bytes\n"
    "  0      D15    1E26A    15A02          F9769A6        2D35BE6C4\n"
    "  9      D16    1E26B    159C2          F9769A6        2D35BE715\n"
    "  A        0        0        0                0                0\n"
    "  ~     1A2B    3C4D5    2B3C4         1F2E3D4C        5A6B7C8D9\n"
    "\n"
    "     Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s\n"
    "           4       1F       18             2A3B           1C2D3E\n"
)


def test_percpu_hex_cpu_numbers() -> None:
    percpu = parse_ip_vs_stats_percpu(PERCPU_612)
    assert percpu.cpu_ids == (0, 9, 10)
    assert percpu.per_cpu[0].conns == 0xD15
    assert percpu.total.out_bytes == 0x5A6B7C8D9
    assert percpu.rates.conns_per_s == 4


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(IPVSUnavailable):
        read_ip_vs_stats(tmp_path)
    with pytest.raises(IPVSUnavailable):
        read_ip_vs_stats_percpu(tmp_path)


GOOD = K40


@pytest.mark.parametrize(
    ("text", "line_no", "reason"),
    [
        ("", None, "empty file"),
        (GOOD[:70], 2, "expected the header"),
        ("\n".join(GOOD.splitlines()[:3]) + "\n", 4, "truncated"),
        (GOOD.replace("FFFFFFFF FFFFFFFF", "FFFFFFFF"), 3, "expected 5 fields, got 4"),
        (GOOD.replace("FFFFFFFF FFFFFFFF", "0xFF FF"), 3, "bad hex number"),
        (GOOD.replace("FFFFFFFF FFFFFFFF", "1" + "0" * 16 + " FF"), 3, "exceeds 64 bits"),
        (GOOD.replace("\n\n", "\nx\n"), 4, "empty line"),
        (GOOD + "extra\n", 7, "unexpected line"),
        (GOOD.replace(" Conns/s", "Conns"), 5, "header"),
        (GOOD.replace("1C2D3E", "1C2D3G"), 6, "bad hex number"),
    ],
)
def test_hostile_stats(text: str, line_no: int | None, reason: str) -> None:
    with pytest.raises(ParseError, match=reason) as info:
        parse_ip_vs_stats(text)
    assert info.value.line_no == line_no
    assert info.value.source == "net/ip_vs_stats"


@pytest.mark.parametrize(
    ("text", "line_no", "reason"),
    [
        ("", None, "empty file"),
        ("\n".join(PERCPU_612.splitlines()[:4]) + "\n", 5, "truncated"),
        (PERCPU_612.replace("  9 ", "  0 "), 4, "must increase"),
        (PERCPU_612.replace("  9 ", " -1 "), 4, "bad hex number"),
        (PERCPU_612.replace("  9 ", "FFFFFFFF "), 4, "exceeds"),
        (PERCPU_612.replace("  ~ ", "  ? "), 6, "bad hex number"),
        (PERCPU_612.replace("\n\n", "\n"), 7, "empty line"),
        (PERCPU_612 + "\n", 10, "unexpected line"),
    ],
)
def test_hostile_percpu(text: str, line_no: int | None, reason: str) -> None:
    with pytest.raises(ParseError, match=reason) as info:
        parse_ip_vs_stats_percpu(text)
    assert info.value.line_no == line_no
    assert info.value.source == "net/ip_vs_stats_percpu"


def test_k40_percpu_widths() -> None:
    # K4.0: rows "%3X %8X %8X %8X %16LX %16LX", rates "    %8X %8X %8X %16X %16X".
    text = PERCPU_612.replace("      D15    1E26A    15A02", " FFFFFFFF FFFFFFFF FFFFFFFF")
    percpu = parse_ip_vs_stats_percpu(text)
    assert percpu.per_cpu[0].conns == percpu.per_cpu[0].out_pkts == 2**32 - 1
