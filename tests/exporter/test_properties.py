"""Any snapshot the model can hold renders to text prometheus-client parses, with every series
once (a duplicate would make Prometheus drop samples)."""

from __future__ import annotations

import ipaddress
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from lvsprobe.exporter.scrape import ExportOptions, Scraper
from lvsprobe.model import (
    ConnCountKey,
    ConnSummary,
    Daemon,
    DaemonState,
    Family,
    Forward,
    Origin,
    Protocol,
    Rates,
    RealServer,
    Service,
    ServiceFlag,
    ServiceKey,
    Snapshot,
    SourceFailure,
    Stats,
)

u64 = st.integers(0, 2**64 - 1)
v4 = st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1))
v6 = st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1))
addr = st.one_of(v4, v6)
text = st.text(min_size=0, max_size=12)

stats = st.builds(Stats, u64, u64, u64, u64, u64)
rates = st.builds(Rates, u64, u64, u64, u64, u64)
real_server = st.builds(
    RealServer,
    address=addr,
    port=st.integers(0, 65535),
    forward=st.sampled_from(Forward),
    weight=st.integers(-1, 2**31 - 1),
    active_conns=st.integers(-1, 2**31),
    inactive_conns=st.integers(-1, 2**31),
    persistent_conns=st.none() | st.integers(0, 2**32 - 1),
    stats=st.none() | stats,
    rates=st.none() | rates,
)


@st.composite
def service(draw: st.DrawFn) -> Service:
    if draw(st.booleans()):
        key = ServiceKey(
            draw(st.none() | st.sampled_from(Family)),
            None,
            None,
            0,
            draw(st.integers(1, 2**32 - 1)),
        )
    else:
        a = draw(addr)
        fam = Family.INET if a.version == 4 else Family.INET6
        proto = draw(st.sampled_from([Protocol.TCP, Protocol.UDP, Protocol.SCTP]))
        key = ServiceKey(fam, proto, a, draw(st.integers(0, 65535)))
    return Service(
        key=key,
        scheduler=draw(text),
        flags=ServiceFlag(draw(st.integers(0, 63))),
        persistence=None,
        real_servers=tuple(
            draw(st.lists(real_server, max_size=4, unique_by=lambda r: (r.address, r.port)))
        ),
        stats=draw(st.none() | stats),
        rates=draw(st.none() | rates),
        pe_name=draw(st.none() | text),
    )


conn_key = st.builds(
    ConnCountKey,
    protocol=st.sampled_from(["TCP", "UDP", "SCTP", "IP"]),
    virtual_address=st.none() | addr,
    virtual_port=st.integers(0, 65535),
    fwmark=st.integers(0, 3),
    dest_address=addr,
    dest_port=st.integers(0, 65535),
    state=text,
    template=st.booleans(),
    origin=st.none() | st.sampled_from(Origin),
)


@st.composite
def snapshot(draw: st.DrawFn) -> Snapshot:
    services = draw(st.lists(service(), max_size=5, unique_by=lambda s: s.key))
    counts = draw(st.dictionaries(conn_key, st.integers(1, 10**6), max_size=8))
    return Snapshot(
        loaded=True,
        via=draw(st.sampled_from(["netlink", "procfs"])),
        version=draw(st.none() | text),
        conn_table_size=draw(st.none() | st.integers(0, 2**27)),
        services=tuple(services),
        totals=draw(st.none() | stats),
        total_rates=draw(st.none() | rates),
        conns=ConnSummary(counts, sum(counts.values())) if draw(st.booleans()) else None,
        sysctls=draw(
            st.dictionaries(
                text, st.lists(st.integers(-(2**31), 2**63), max_size=3).map(tuple), max_size=3
            )
        ),
        daemons=tuple(
            draw(
                st.lists(
                    st.builds(Daemon, st.sampled_from(DaemonState), text, st.integers(0, 255)),
                    max_size=2,
                    unique_by=lambda d: d.state,
                )
            )
        ),
        failures=tuple(draw(st.lists(st.builds(SourceFailure, text, text), max_size=2))),
        durations_s=draw(st.dictionaries(text, st.floats(0, 10), max_size=3)),
    )


@settings(max_examples=100, deadline=None)
@given(snap=snapshot(), compat=st.booleans(), per_rs=st.booleans())
def test_any_snapshot_renders_parseable_unique_series(
    snap: Snapshot, compat: bool, per_rs: bool
) -> None:
    opts = ExportOptions(
        compat_node_exporter=compat, conns="per-real-server" if per_rs else "summary"
    )
    body = Scraper(opts, read=lambda t, **kw: snap).scrape().decode()
    seen: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
    for fam in text_string_to_metric_families(body):
        for sample in fam.samples:
            seen[(sample.name, tuple(sorted(sample.labels.items())))] += 1
    dupes = [key for key, n in seen.items() if n > 1]
    assert not dupes, dupes[:3]
