"""Label blocks kept from one scrape to the next (`BackendLabels`) never go stale: a scraper
that has seen other tables renders a table exactly as a fresh one does."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from lvsprobe.exporter.backend_labels import BackendLabels
from lvsprobe.exporter.scrape import ExportOptions, Scraper
from lvsprobe.kernel.genl.simulated import generated_services
from lvsprobe.model import (
    Family,
    Forward,
    Protocol,
    RealServer,
    RealServerRows,
    RealServerTable,
    Service,
    ServiceFlag,
    ServiceKey,
    Snapshot,
)

BUILD = ("0.1.0", "3.11.0")
# Few values each, so that two drawn tables often share a service and differ in one column.
_V4 = (0x0A000001, 0x0A000002)
_V6 = (0x20010DB8 << 96 | 1,)


def _rs(family: Family, number: int, port: int, forward: Forward, weight: int) -> RealServer:
    address = (
        ipaddress.IPv4Address(number) if family is Family.INET else ipaddress.IPv6Address(number)
    )
    return RealServer(address, port, forward, weight, 0, 0, family=family)


real_servers = st.one_of(
    st.builds(
        _rs,
        st.just(Family.INET),
        st.sampled_from(_V4),
        st.sampled_from((80, 81)),
        st.sampled_from((Forward.MASQ, Forward.ROUTE)),
        st.integers(0, 2),
    ),
    st.builds(
        _rs,
        st.just(Family.INET6),
        st.sampled_from(_V6),
        st.sampled_from((80, 81)),
        st.sampled_from((Forward.MASQ, Forward.TUNNEL)),
        st.integers(0, 2),
    ),
)


def _service(port: int, rss: list[RealServer]) -> Service:
    key = ServiceKey(Family.INET, Protocol.TCP, ipaddress.IPv4Address("198.18.0.1"), port)
    return Service(key, "wlc", ServiceFlag.HASHED, None, RealServerRows.of(rss))


services = st.lists(
    st.builds(_service, st.sampled_from((80, 443, 8080)), st.lists(real_servers, max_size=4)),
    max_size=3,
    unique_by=lambda svc: svc.key.port,
)


def _scraper(holder: list[Snapshot], **options: object) -> Scraper:
    return Scraper(ExportOptions(**options), read=lambda t, **kw: holder[0], build=BUILD)  # type: ignore[arg-type]


@given(st.lists(services, min_size=2, max_size=5), st.sampled_from((None, 3)))
@settings(max_examples=150, deadline=None)
def test_a_table_renders_as_a_fresh_scraper_renders_it(
    tables: list[list[Service]], max_backends: int | None
) -> None:
    """Real servers added, removed, moved, or with another address, port or forward (and
    --collector.backends.max-series cutting a service short) show their own labels."""
    holder: list[Snapshot] = []
    kept = _scraper(holder, max_backends=max_backends)
    for table in tables:
        holder[:] = [Snapshot(loaded=True, via="netlink", services=tuple(table))]
        fresh = _scraper(holder, max_backends=max_backends)
        assert _labelled(kept.scrape()) == _labelled(fresh.scrape())


def _labelled(text: bytes) -> list[bytes]:
    """The lines, but the counter of dropped series (it counts over a scraper's life)."""
    return [line for line in text.splitlines() if b"dropped_series_total" not in line]


def _tails(labels: BackendLabels, heads: list[str], table: list[Service]) -> list[str]:
    rows = [svc.real_servers for svc in table]
    return labels.tails(heads, list(map(len, rows)), RealServerTable.concat(rows))


def test_tails_are_reused_for_unchanged_services_and_dropped_for_gone_ones() -> None:
    old, new = generated_services(3), generated_services(2)
    labels = BackendLabels()
    first = _tails(labels, ["a", "b", "c"], old)
    assert _tails(labels, ["a", "b", "c"], old) is first  # the same table: nothing to do
    again = _tails(labels, ["a", "b"], new)
    assert again == first[:20]
    assert all(a is b for a, b in zip(again, first, strict=False))  # kept, not made anew
    made_again = _tails(labels, ["c"], old[2:])
    assert made_again == first[20:] and made_again[0] is not first[20]
    assert first[0] == '172.16.0.0",backend_port="8000",forward="masq"} '


def test_a_changed_address_beyond_64_bits_gets_its_own_tail() -> None:
    """Addresses that do not pack into 8 bytes (IPv6) are compared whole, not truncated."""
    base = 0x20010DB8 << 96
    before = [_service(80, [_rs(Family.INET6, base | 1, 80, Forward.MASQ, 1)])]
    after = [_service(80, [_rs(Family.INET6, base | 1 | 1 << 64, 80, Forward.MASQ, 1)])]
    labels = BackendLabels()
    assert _tails(labels, ["h"], before)[0].startswith('2001:db8::1"')
    assert _tails(labels, ["h"], after)[0].startswith('2001:db8:0:1::1"')
