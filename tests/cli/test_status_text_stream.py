"""`status`'s text view is written as it is made, a chunk of about WRITE_CHARS at a time:
the same text as made whole, in few large writes, never held whole."""

from __future__ import annotations

import io
import tracemalloc
from ipaddress import IPv4Address

import pytest

from lvsprobe.cli.status import WRITE_CHARS, render_text, write_text
from lvsprobe.ipvsadm_view import View
from lvsprobe.model import (
    Family,
    Forward,
    Protocol,
    Rates,
    RealServerRows,
    RealServerTable,
    Service,
    ServiceFlag,
    ServiceKey,
    Snapshot,
    Stats,
)


class _Writes(io.StringIO):
    """A text stream that keeps the size of each write."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def write(self, text: str) -> int:
        self.sizes.append(len(text))
        return super().write(text)


class _Sink(io.TextIOBase):
    """A text stream that keeps only how much was written to it."""

    written = 0

    def write(self, text: str) -> int:
        self.written += len(text)
        return len(text)


@pytest.fixture(scope="module")
def snap() -> Snapshot:
    """Real servers as a reader gives them (one table, a range of rows a service), made
    from columns: 1,000 services of 100 real servers, ~8 MB of `--stats --exact`."""
    services, per = 1_000, 100
    rows = range(services * per)
    counters = tuple([n * scale for n in rows] for scale in (1, 10, 9, 6400, 90000, 0, 2, 3, 4, 5))
    table = RealServerTable(
        address_families=[Family.INET] * len(rows),
        address_numbers=[0xAC100000 + n for n in rows],
        ports=[8000 + n % 1000 for n in rows],
        forwards=[Forward.MASQ] * len(rows),
        weights=[1 + n % 3 for n in rows],
        active_conns=[n % 7 for n in rows],
        inactive_conns=[n * 13 % 100_000 for n in rows],
        persistent_conns=[n % 5 for n in rows],
        upper_thresholds=[0] * len(rows),
        lower_thresholds=[0] * len(rows),
        stats=counters,
    )
    parts = RealServerRows.split(table, [per] * services)
    return Snapshot(
        loaded=True,
        via="netlink",
        services=tuple(
            Service(
                ServiceKey(Family.INET, Protocol.TCP, IPv4Address(0x0A000001 + i), 80),
                "wlc",
                ServiceFlag.HASHED,
                None,
                part,
                Stats(i, i, i, i, i),
                Rates(1, 2, 3, 4, 5),
            )
            for i, part in enumerate(parts)
        ),
    )


@pytest.mark.parametrize(("view", "exact"), [(View.STATS, True), (View.LIST, False)])
def test_text_is_written_in_few_large_writes(snap: Snapshot, view: View, exact: bool) -> None:
    """A write per service was a write(2) per service: a round trip each on a 9p share."""
    out = _Writes()
    write_text(snap, view, exact, ("conns",), out)
    assert out.getvalue() == render_text(snap, view, exact, ("conns",))
    assert len(out.getvalue()) > 2 * WRITE_CHARS
    assert len(out.sizes) <= len(out.getvalue()) // WRITE_CHARS + 1
    assert all(size >= WRITE_CHARS for size in out.sizes[:-1])


def test_text_is_never_held_whole(snap: Snapshot) -> None:
    """The text of 10^5 real servers made whole was ~100 MB of the command's peak: now a
    chunk, the pieces it is joined from and a batch of lines being made (~3 MB whatever
    the text's size; the services' sort keys add ~200 B a service)."""
    sink = _Sink()
    tracemalloc.start()
    try:
        write_text(snap, View.STATS, True, (), sink)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.written > 7 * WRITE_CHARS
    assert peak_bytes < 4 * WRITE_CHARS, (peak_bytes, sink.written)
