"""The ipvsadm views are made from the real-server table's columns: the text must be what the
object path made (the code before, kept here as the readable reference), byte for byte, for
any table a reader makes (lists or compact arrays, rows shared by many services or one table
each, IPv4/IPv6/mixed, addresses where C's compare wraps, huge counters) in every view,
exact or not, and at any batch boundary."""

from __future__ import annotations

import dataclasses
import functools
from array import array
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsprobe.ipvsadm_view import View, format_list, list_texts
from lvsprobe.kernel.genl.simulated import SimulatedKernel, generated_services
from lvsprobe.kernel.genl.socket import IPVSNetlink
from lvsprobe.model import (
    Family,
    Forward,
    IPAddress,
    Persistence,
    Protocol,
    Rates,
    RealServer,
    RealServerRows,
    RealServerTable,
    Service,
    ServiceFlag,
    ServiceKey,
    Snapshot,
    Stats,
)
from tests.strategies import maybe, u32, u64

# --- the reference: the views made from RealServer objects -------------------------------


def _s32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _cmp_addr(a: IPAddress | None, b: IPAddress | None, v6: bool) -> int:
    pa = a.packed if a is not None else bytes(16)
    pb = b.packed if b is not None else bytes(16)
    if not v6:
        return _s32(int.from_bytes(pa[:4], "big") - int.from_bytes(pb[:4], "big"))
    for i in range(0, 16, 4):
        r = _s32(int.from_bytes(pa[i : i + 4], "big") - int.from_bytes(pb[i : i + 4], "big"))
        if r:
            return r
    return 0


def _family_of(svc: Service) -> Family:
    if svc.key.family is not None:
        return svc.key.family
    families = svc.real_servers.address_families
    return families[0] if families else Family.INET


def ref_sort_services(services: list[Service]) -> list[Service]:
    def cmp(a: Service, b: Service) -> int:
        r = a.key.fwmark - b.key.fwmark
        if r:
            return r
        fa, fb = _family_of(a), _family_of(b)
        if fa != fb:
            return int(fa) - int(fb)
        r = int(a.key.protocol or 0) - int(b.key.protocol or 0)
        if r:
            return r
        r = _cmp_addr(a.key.address, b.key.address, fa == Family.INET6)
        return r or a.key.port - b.key.port

    return sorted(services, key=functools.cmp_to_key(cmp))


def ref_sort_real_servers(real_servers: tuple[RealServer, ...]) -> list[RealServer]:
    def cmp(a: RealServer, b: RealServer) -> int:
        r = _cmp_addr(a.address, b.address, a.address.version == 6)
        return r or a.port - b.port

    return sorted(real_servers, key=functools.cmp_to_key(cmp))


def ref_largenum(value: int | None, exact: bool) -> str:
    if value is None:
        return f"{'-':>9}"
    if exact:
        digits = str(value)
        return digits.rjust(9 if len(digits) <= 8 else len(digits) + 1)
    for limit, div, unit in (
        (100_000_000, 1, ""),
        (1_000_000_000, 1_000, "K"),
        (100_000_000_000, 1_000_000, "M"),
        (100_000_000_000_000, 1_000_000_000, "G"),
    ):
        if value < limit:
            return f"{value // div:>9}" if not unit else f"{value // div:>8}{unit}"
    return f"{value // 1_000_000_000_000:>8}T"


def _counters(record: Stats | Rates | None, exact: bool) -> str:
    values = (None,) * 5 if record is None else dataclasses.astuple(record)
    return "".join(ref_largenum(v, exact) for v in values)


def _num(value: int | None, width: int) -> str:
    return f"{'-' if value is None else value:<{width}}"


def ref_dest_line(rs: RealServer, view: View, exact: bool) -> str:
    name = f"{rs.address}:{rs.port}" if rs.address.version == 4 else f"[{rs.address}]:{rs.port}"
    if rs.address.version == 4:
        name = name[:28]
    head = f"  -> {name:<28}"
    if view is View.STATS:
        return head + _counters(rs.stats, exact)
    if view is View.RATE:
        r = rs.rates
        if r is None:
            return head + f" {'-':>8}" * 3 + ref_largenum(None, exact) * 2
        return (
            head
            + f" {r.conns_per_s:>8} {r.in_pkts_per_s:>8} {r.out_pkts_per_s:>8}"
            + ref_largenum(r.in_bytes_per_s, exact)
            + ref_largenum(r.out_bytes_per_s, exact)
        )
    if view is View.THRESHOLDS:
        return (
            f"{head} {_num(rs.upper_threshold, 10)} {_num(rs.lower_threshold, 10)}"
            f" {rs.active_conns:<10} {rs.inactive_conns:<10}"
        )
    if view is View.PERSISTENT_CONN:
        return (
            f"{head} {rs.weight:<9} {_num(rs.persistent_conns, 11)}"
            f" {rs.active_conns:<10} {rs.inactive_conns:<10}"
        )
    return (
        f"{head} {rs.forward.ipvsadm_name:<7} {rs.weight:<6}"
        f" {rs.active_conns:<10} {rs.inactive_conns:<10}"
    )


def ref_service_name(svc: Service) -> str:
    key = svc.key
    v6 = _family_of(svc) == Family.INET6
    if key.fwmark:
        return f"FWM  {key.fwmark}" + (" IPv6" if v6 else "")
    proto = key.protocol.name if key.protocol is not None else "?"
    assert key.address is not None
    address = f"{key.address}:{key.port}" if not v6 else f"[{key.address}]:{key.port}"
    name = f"{proto:<4} {address}"
    return name if v6 else name[:33]


def ref_service_line(svc: Service, view: View, exact: bool) -> str:
    if view is View.STATS:
        return f"{ref_service_name(svc):<33}" + _counters(svc.stats, exact)
    if view is View.RATE:
        return f"{ref_service_name(svc):<33}" + _counters(svc.rates, exact)
    line = f"{ref_service_name(svc)} {svc.scheduler}"
    sched = svc.flags & (ServiceFlag.SCHED1 | ServiceFlag.SCHED2 | ServiceFlag.SCHED3)
    if sched:
        names = {"sh": ("sh-fallback", "sh-port"), "mh": ("mh-fallback", "mh-port")}
        first, second = names.get(svc.scheduler, ("flag-1", "flag-2"))
        flags = [(ServiceFlag.SCHED1, first), (ServiceFlag.SCHED2, second)]
        flags.append((ServiceFlag.SCHED3, "flag-3"))
        line += f" ({','.join(name for flag, name in flags if svc.flags & flag)})"
    p = svc.persistence
    if p is not None:
        timeout = p.timeout_s if p.timeout_s is not None else f"{p.timeout_jiffies}j"
        line += f" persistent {timeout}"
        if _family_of(svc) == Family.INET and p.prefix_len != 32:
            line += f" mask {IPv4Network(f'0.0.0.0/{p.prefix_len}').netmask}"
        elif _family_of(svc) == Family.INET6 and p.prefix_len != 128:
            line += f" mask {p.prefix_len}"
        if svc.pe_name:
            line += f" pe {svc.pe_name}"
    if svc.one_packet:
        line += " ops"
    return line


def ref_format_list(snap: Snapshot, view: View, exact: bool) -> str:
    """format_list as it was: a RealServer object, and f-strings, per line."""
    out = [f"IP Virtual Server version {snap.version} (size={snap.conn_table_size})"]
    out.extend(format_list(dataclasses.replace(snap, services=()), view).splitlines()[1:])
    for svc in ref_sort_services(list(snap.services)):
        out.append(ref_service_line(svc, view, exact))
        out.extend(
            ref_dest_line(rs, view, exact)
            for rs in ref_sort_real_servers(svc.real_servers.objects())
        )
    return "\n".join(out) + "\n"


# --- generated tables ------------------------------------------------------------------------

# Where C's `int r = a - b` wraps, and neighbours that sort by their numbers.
word = st.sampled_from([0, 1, 2, 0x0A000001, 0x7FFFFFFF, 0x80000000, 0x80000001, 2**32 - 1]) | u32
# Each of print_largenum's unit steps, at and around its limits.
counter = (
    st.integers(0, 10**9)
    | st.sampled_from(
        [10**8 - 1, 10**8, 10**9 - 1, 10**9, 10**11 - 1, 10**11, 10**14 - 1, 10**14, 2**64 - 1]
    )
    | u64
)


def addresses(family: Family) -> st.SearchStrategy[IPAddress]:
    if family is Family.INET:
        return word.map(IPv4Address)
    words = st.tuples(word, word, word, word)
    return words.map(lambda w: IPv6Address(w[0] << 96 | w[1] << 64 | w[2] << 32 | w[3]))


@st.composite
def real_servers(draw: st.DrawFn, families: tuple[Family, ...]) -> RealServer:
    family = draw(st.sampled_from(families))
    stats = draw(st.none() | st.builds(Stats, counter, counter, counter, counter, counter))
    rates = draw(st.none() | st.builds(Rates, counter, counter, counter, counter, counter))
    return RealServer(
        draw(addresses(family)),
        draw(st.sampled_from([0, 80, 443, 65535]) | st.integers(0, 65535)),
        draw(st.sampled_from(Forward)),
        draw(st.integers(-(2**31), 2**31 - 1)),
        draw(st.integers(-(2**31), 2**31 - 1)),
        draw(u32),
        draw(maybe),
        draw(maybe),
        draw(maybe),
        stats,
        rates,
        draw(st.sampled_from([None, family])),
    )


@st.composite
def services(draw: st.DrawFn) -> Service:
    """An IPv4, IPv6 or fwmark service of IPv4, IPv6 or mixed real servers."""
    family = draw(st.sampled_from(Family))
    fwmark = draw(st.sampled_from([0, 0, 1, 7]))
    if fwmark:
        key = ServiceKey(draw(st.sampled_from([None, family])), None, None, 0, fwmark)
    else:
        protocol = draw(st.sampled_from([Protocol.TCP, Protocol.UDP, Protocol.SCTP]))
        key = ServiceKey(family, protocol, draw(addresses(family)), draw(st.integers(0, 65535)))
    families = draw(st.sampled_from([(family,), (family,), (Family.INET, Family.INET6)]))
    prefix_len = st.integers(0, 128 if key.family is Family.INET6 else 32)
    persistence = draw(st.none() | st.builds(Persistence, maybe, maybe, prefix_len))
    return Service(
        key=key,
        scheduler=draw(st.sampled_from(["wlc", "sh", "mh", "rr"])),
        flags=ServiceFlag(draw(st.integers(0, 0x3F))),
        persistence=persistence,
        real_servers=tuple(draw(st.lists(real_servers(families), max_size=6))),
        stats=draw(st.none() | st.builds(Stats, counter, counter, counter, counter, counter)),
        rates=draw(st.none() | st.builds(Rates, counter, counter, counter, counter, counter)),
        pe_name=draw(st.sampled_from([None, "sip"])),
    )


def _compact(table: RealServerTable) -> RealServerTable:
    """The table with its None-free integer columns as arrays (netlink's decode)."""
    changes: dict[str, Any] = {
        name: array("Q", column)
        for name in ("ports", "inactive_conns")
        if None not in (column := getattr(table, name))
    }
    if table.stats is not None:
        changes["stats"] = tuple(
            array("Q", column) if None not in column else column for column in table.stats
        )
    return dataclasses.replace(table, **changes)


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    """Services whose real servers are rows of one table (as a read makes them), or of
    tables of their own (as objects make them); lists or arrays."""
    made = draw(st.lists(services(), max_size=6))
    groups = [svc.real_servers.objects() for svc in made]
    compact = draw(st.booleans())
    shared = RealServerTable.of(rs for group in groups for rs in group)
    parts = RealServerRows.split(_compact(shared) if compact else shared, list(map(len, groups)))
    if not draw(st.booleans()):
        parts = [_compact(p.table) if compact else p.table for p in map(RealServerRows.of, groups)]
        parts = [RealServerRows(table, 0, len(table)) for table in parts]
    return Snapshot(
        loaded=True,
        via="netlink",
        version="1.2.1",
        conn_table_size=4096,
        services=tuple(
            dataclasses.replace(svc, real_servers=part)
            for svc, part in zip(made, parts, strict=True)
        ),
    )


VIEWS = [(view, exact) for view in View for exact in (False, True)]


@settings(max_examples=60)
@given(snapshots(), st.integers(1, 40))
def test_the_column_path_is_the_object_path(snap: Snapshot, batch_lines: int) -> None:
    for view, exact in VIEWS:
        expected = ref_format_list(snap, view, exact)
        assert format_list(snap, view, exact=exact) == expected, (view, exact)
        pieces = list(list_texts(snap, view, exact=exact, batch_lines=batch_lines))
        assert "".join(pieces) == expected, (view, exact, batch_lines)
        assert all(piece.endswith("\n") for piece in pieces)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_netlink_read_renders_as_its_objects_do(seed: int) -> None:
    """The columns a netlink read makes (arrays, optional columns, older kernels' rows),
    shuffled so the sort has work to do."""
    made = generated_services(120, seed=seed)
    for index, svc in enumerate(made):
        rows = svc.real_servers.objects()
        rows = rows[::-1] if index % 2 else rows[-1:] + rows[:-1]
        made[index] = dataclasses.replace(svc, real_servers=rows)
    services = IPVSNetlink.connect(SimulatedKernel(made)).services()
    snap = Snapshot(loaded=True, via="netlink", version="1.2.1", services=tuple(services))
    for view, exact in VIEWS:
        assert format_list(snap, view, exact=exact) == ref_format_list(snap, view, exact)


def test_each_piece_holds_a_batch_not_the_whole_view() -> None:
    """Services of 10 real servers and one of 1,000: pieces of about 100 lines each."""
    big = _tcp(1, Family.INET, tuple(_dest(0xAC100000 + n, port=n) for n in range(1000)))
    snap = Snapshot(loaded=True, via="netlink", services=(*generated_services(300), big))
    pieces = list(list_texts(snap, View.STATS, exact=True, batch_lines=100))
    assert "".join(pieces) == format_list(snap, View.STATS, exact=True)
    assert sum(piece.count("\n") for piece in pieces) == 3 + 300 * 11 + 1001
    # a window of 100 to 199 real servers, with the lines of the services among them
    assert max(piece.count("\n") for piece in pieces) < 300
    assert len(pieces) > (300 * 11 + 1001) / 300


def _dest(number: int, family: Family = Family.INET, port: int = 80) -> RealServer:
    address = IPv4Address(number) if family is Family.INET else IPv6Address(number)
    return RealServer(address, port, Forward.ROUTE, 1, 0, 0)


def _tcp(number: int, family: Family, real_servers: tuple[RealServer, ...] = ()) -> Service:
    address = IPv4Address(number) if family is Family.INET else IPv6Address(number)
    key = ServiceKey(family, Protocol.TCP, address, 80)
    return Service(key, "rr", ServiceFlag.HASHED, None, real_servers)


WIDE = (0x01000000, 0xC8000000, 0x64000000, 0x01000000)  # 1.0.0.0, 200.0.0.0, 100.0.0.0, again


@pytest.mark.parametrize(
    ("services", "numeric"),
    [
        # C's `int r = a - b` wraps: 1.0.0.0 sorts after 200.0.0.0 (not a total order)
        ([_tcp(1, Family.INET, tuple(map(_dest, WIDE)))], False),
        ([_tcp(number, Family.INET) for number in WIDE[:3]], False),
        ([_tcp(n << 32 | 1, Family.INET6) for n in WIDE[:3]], False),
        # the same in an IPv6 address's last word
        ([_tcp(1, Family.INET6, tuple(_dest(n, Family.INET6) for n in WIDE))], False),
        # a service of both families compares by the first one's words: ::2 before 0.0.0.1
        ([_tcp(1, Family.INET, (_dest(1), _dest(2, Family.INET6)))], False),
        ([_tcp(1, Family.INET6, (_dest(2, Family.INET6), _dest(1)))], False),
        # close addresses sort as their numbers, then the port, the kernel's order kept on ties
        ([_tcp(1, Family.INET, (_dest(9, port=2), _dest(9, port=1), _dest(3)))], True),
    ],
)
def test_ipvsadms_compare_quirks_are_kept(services: list[Service], numeric: bool) -> None:
    """The order is the reference's; and where C's compare is not the numbers', not theirs."""
    snap = Snapshot(loaded=True, via="netlink", services=tuple(services))
    got = format_list(snap, View.LIST)
    assert got == ref_format_list(snap, View.LIST, exact=False)

    def name(address: IPAddress | None, port: int) -> str:
        return f"{address}:{port}" if isinstance(address, IPv4Address) else f"[{address}]:{port}"

    by_number = []
    for svc in sorted(services, key=lambda svc: int(svc.key.address or 0)):
        by_number.append(name(svc.key.address, svc.key.port))
        dests = sorted(svc.real_servers, key=lambda rs: (int(rs.address), rs.port))
        by_number.extend(name(rs.address, rs.port) for rs in dests)
    assert ([line.split()[1] for line in got.splitlines()[3:]] == by_number) is numeric
