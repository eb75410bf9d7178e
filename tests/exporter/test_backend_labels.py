"""Label blocks kept from one scrape to the next (`BackendLabels`) never go stale: a scraper
that has seen other tables renders a table exactly as a fresh one does."""

from __future__ import annotations

import ipaddress

from hypothesis import example, given, settings
from hypothesis import strategies as st

from lvsprobe.exporter.backend_labels import BackendLabels
from lvsprobe.exporter.compat import FULL_BACKEND_LABELS, NodeExporterCollector
from lvsprobe.exporter.render import Builder
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
    Stats,
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


def _tails(labels: BackendLabels, heads: list[bytes], table: list[Service]) -> list[bytes]:
    rows = [svc.real_servers for svc in table]
    return labels.tails(heads, list(map(len, rows)), RealServerTable.concat(rows))


def test_tails_are_reused_for_unchanged_services_and_dropped_for_gone_ones() -> None:
    old, new = generated_services(3), generated_services(2)
    labels = BackendLabels()
    first = _tails(labels, [b"a", b"b", b"c"], old)
    assert _tails(labels, [b"a", b"b", b"c"], old) is first  # the same table: nothing to do
    again = _tails(labels, [b"a", b"b"], new)
    assert again == first[:20]
    assert all(a is b for a, b in zip(again, first, strict=False))  # kept, not made anew
    made_again = _tails(labels, [b"c"], old[2:])
    assert made_again == first[20:] and made_again[0] is not first[20]
    assert first[0] == b'172.16.0.0",backend_port="8000",forward="masq"} '


def test_a_changed_address_beyond_64_bits_gets_its_own_tail() -> None:
    """Addresses that do not pack into 8 bytes (IPv6) are compared whole, not truncated."""
    base = 0x20010DB8 << 96
    before = [_service(80, [_rs(Family.INET6, base | 1, 80, Forward.MASQ, 1)])]
    after = [_service(80, [_rs(Family.INET6, base | 1 | 1 << 64, 80, Forward.MASQ, 1)])]
    labels = BackendLabels()
    assert _tails(labels, [b"h"], before)[0].startswith(b'2001:db8::1"')
    assert _tails(labels, [b"h"], after)[0].startswith(b'2001:db8:0:1::1"')


def _compat_service(kind: str, port: int, rss: list[RealServer]) -> Service:
    """A TCP, UDP or SCTP service on one VIP and port, or an fwmark one (`port` its mark)."""
    vip = ipaddress.IPv4Address("198.18.0.1")
    key = {
        "fwmark": ServiceKey(None, None, None, 0, fwmark=port),
        "tcp": ServiceKey(Family.INET, Protocol.TCP, vip, port),
        "udp": ServiceKey(Family.INET, Protocol.UDP, vip, port),
        "sctp": ServiceKey(Family.INET, Protocol.SCTP, vip, port),
    }[kind]
    return Service(key, "wlc", ServiceFlag.HASHED, None, RealServerRows.of(rss))


# node_exporter's quirks make blocks alike: an SCTP service's real servers go under the
# service before it, and ::ffff:10.0.0.1 prints as 10.0.0.1. Few values, so that tables often
# share a service and differ in one real server.
_COMPAT_ADDRESSES = (
    (Family.INET, 0x0A000001),
    (Family.INET, 0x0A000002),
    (Family.INET6, 0xFFFF0A000001),
)
_compat_real_servers = st.builds(
    lambda address, port, weight: _rs(*address, port, Forward.MASQ, weight),
    st.sampled_from(_COMPAT_ADDRESSES),
    st.sampled_from((80, 81)),
    st.integers(0, 2),
)
_compat_services = st.lists(
    st.builds(
        _compat_service,
        st.sampled_from(("tcp", "udp", "sctp", "fwmark")),
        st.just(80),  # TCP and UDP services alike but for their proto
        st.lists(_compat_real_servers, max_size=3),
    ),
    max_size=4,
    unique_by=lambda svc: svc.key.protocol,
)
_A, _B = (_rs(Family.INET, n, 80, Forward.MASQ, 1) for n in (0x0A000001, 0x0A000002))


@given(
    st.lists(_compat_services, min_size=2, max_size=5),
    st.sampled_from(
        (
            FULL_BACKEND_LABELS,
            ("remote_port", "local_address", "remote_address"),
            ("local_address", "local_port", "proto"),
            (),
        )
    ),
)
@example(  # a service's real server moved to another one alike but for its proto
    [
        [_compat_service("tcp", 80, [_A]), _compat_service("udp", 80, [_B])],
        [_compat_service("tcp", 80, [_B])],
    ],
    FULL_BACKEND_LABELS,
)
@settings(max_examples=150, deadline=None)
def test_a_compat_scrape_renders_as_a_fresh_scraper_renders_it(
    tables: list[list[Service]], labels: tuple[str, ...]
) -> None:
    """--compat node-exporter: real servers added, removed, moved or edited (and blocks that
    then look alike, summed) show as a scraper that never saw the tables before shows them."""
    holder: list[Snapshot] = []
    options = {"compat_node_exporter": True, "compat_backend_labels": labels}
    kept = _scraper(holder, **options)
    for table in tables:
        holder[:] = [
            Snapshot(loaded=True, via="procfs", services=tuple(table), totals=Stats(0, 0, 0, 0, 0))
        ]
        assert kept.scrape() == _scraper(holder, **options).scrape()


def test_compat_blocks_are_reused_while_the_table_is_unchanged() -> None:
    """A second scrape of the same table writes the first one's tails (none made anew)."""
    snap = Snapshot(
        loaded=True,
        via="netlink",
        services=tuple(generated_services(3)),
        totals=Stats(0, 0, 0, 0, 0),
    )
    collector = NodeExporterCollector()
    scrapes = []
    for _ in range(2):
        out = Builder(collector.specs)
        collector.collect(snap, out)
        (rows,) = out.families["node_ipvs_backend_weight"].rows
        scrapes.append(rows.tails)
    assert scrapes[1] is scrapes[0]
    assert scrapes[0][0] == b'172.16.0.0",remote_port="8000",proto="TCP",local_mark=""} '
