"""ipvsadm 1.31's text views of a Snapshot, character for character (`ipvsadm -Ln` and its
`--stats`, `--rate`, `--exact`, `--thresholds`, `--persistent-conn`, `--timeout`, `--daemon`).

People who run directors read these views all day; showing the same text lets them trust the
numbers. Sorting and field widths follow ipvsadm.c (print_service_entry, print_largenum,
ipvs_cmp_services/ipvs_cmp_dests), including its C quirks (truncated names, signed compares).
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from collections.abc import Iterable

from lvsprobe.model import (
    Daemon,
    DaemonState,
    Family,
    IPAddress,
    RealServer,
    Service,
    ServiceFlag,
    Snapshot,
    Stats,
    Timeouts,
)


class View(enum.Enum):
    LIST = "list"
    STATS = "stats"
    RATE = "rate"
    THRESHOLDS = "thresholds"
    PERSISTENT_CONN = "persistent-conn"


_TITLES = {
    View.LIST: "Prot LocalAddress:Port Scheduler Flags\n"
    "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
    View.STATS: f"{'Prot LocalAddress:Port':<33} {'Conns':>8} {'InPkts':>8} {'OutPkts':>8}"
    f" {'InBytes':>8} {'OutBytes':>8}\n  -> RemoteAddress:Port",
    View.RATE: f"{'Prot LocalAddress:Port':<33} {'CPS':>8} {'InPPS':>8} {'OutPPS':>8}"
    f" {'InBPS':>8} {'OutBPS':>8}\n  -> RemoteAddress:Port",
    View.THRESHOLDS: f"{'Prot LocalAddress:Port':<33} {'Uthreshold':<10} {'Lthreshold':<10}"
    f" {'ActiveConn':<10} {'InActConn':<10}\n  -> RemoteAddress:Port",
    View.PERSISTENT_CONN: f"{'Prot LocalAddress:Port':<33} {'Weight':<9} {'PersistConn':<11}"
    f" {'ActiveConn':<10} {'InActConn':<10}\n  -> RemoteAddress:Port",
}

_MISSING = "-"


def _s32(value: int) -> int:
    """C's `int r = a - b` on unsigned operands: wrap to signed 32 bits."""
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


def sort_services(services: Iterable[Service]) -> list[Service]:
    """ipvsadm's order: fwmark, address family, protocol, address, port."""

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


def sort_real_servers(real_servers: Iterable[RealServer]) -> list[RealServer]:
    """ipvsadm's order for destinations: address, then port."""

    def cmp(a: RealServer, b: RealServer) -> int:
        r = _cmp_addr(a.address, b.address, a.address.version == 6)
        return r or a.port - b.port

    return sorted(real_servers, key=functools.cmp_to_key(cmp))


def addr_port(address: IPAddress, port: int) -> str:
    """`198.18.1.11:80` or `[2001:2::11]:80`, as ipvsadm -n prints them."""
    return f"{address}:{port}" if address.version == 4 else f"[{address}]:{port}"


def service_name(svc: Service) -> str:
    """`TCP  198.18.1.100:80`, `FWM  1`, `FWM  1 IPv6` (IPv4 names cut at 33 chars)."""
    key = svc.key
    v6 = _family_of(svc) == Family.INET6
    if key.fwmark:
        return f"FWM  {key.fwmark}" + (" IPv6" if v6 else "")
    proto = key.protocol.name if key.protocol is not None else "?"
    assert key.address is not None
    name = f"{proto:<4} {addr_port(key.address, key.port)}"
    return name if v6 else name[:33]


def _sched_flags(svc: Service) -> str:
    names = {"sh": ("sh-fallback", "sh-port"), "mh": ("mh-fallback", "mh-port")}
    first, second = names.get(svc.scheduler, ("flag-1", "flag-2"))
    out = []
    if svc.flags & ServiceFlag.SCHED1:
        out.append(first)
    if svc.flags & ServiceFlag.SCHED2:
        out.append(second)
    if svc.flags & ServiceFlag.SCHED3:
        out.append("flag-3")
    return ",".join(out)


def _service_line(svc: Service) -> str:
    line = f"{service_name(svc)} {svc.scheduler}"
    if svc.flags & (ServiceFlag.SCHED1 | ServiceFlag.SCHED2 | ServiceFlag.SCHED3):
        line += f" ({_sched_flags(svc)})"
    p = svc.persistence
    if p is not None:
        timeout = p.timeout_s if p.timeout_s is not None else f"{p.timeout_jiffies}j"
        line += f" persistent {timeout}"
        if _family_of(svc) == Family.INET and p.prefix_len != 32:
            mask = ipaddress.IPv4Network(f"0.0.0.0/{p.prefix_len}").netmask
            line += f" mask {mask}"
        elif _family_of(svc) == Family.INET6 and p.prefix_len != 128:
            line += f" mask {p.prefix_len}"
        if svc.pe_name:
            line += f" pe {svc.pe_name}"
    if svc.one_packet:
        line += " ops"
    return line


def largenum(value: int | None, exact: bool) -> str:
    """print_largenum: 9 columns, decimal K/M/G/T units unless exact."""
    if value is None:
        return f"{_MISSING:>9}"
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


def _counters(stats: Stats | None, exact: bool) -> str:
    if stats is None:
        return largenum(None, exact) * 5
    return "".join(
        largenum(v, exact)
        for v in (stats.conns, stats.in_pkts, stats.out_pkts, stats.in_bytes, stats.out_bytes)
    )


def _num(value: int | None, width: int) -> str:
    return f"{_MISSING if value is None else value:<{width}}"


def _dest_line(rs: RealServer, view: View, exact: bool) -> str:
    name = addr_port(rs.address, rs.port)
    if rs.address.version == 4:
        name = name[:28]
    head = f"  -> {name:<28}"
    if view is View.STATS:
        return head + _counters(rs.stats, exact)
    if view is View.RATE:
        r = rs.rates
        if r is None:
            return head + f" {_MISSING:>8}" * 3 + largenum(None, exact) * 2
        return (
            head
            + f" {r.conns_per_s:>8} {r.in_pkts_per_s:>8} {r.out_pkts_per_s:>8}"
            + largenum(r.in_bytes_per_s, exact)
            + largenum(r.out_bytes_per_s, exact)
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


def format_list(snap: Snapshot, view: View = View.LIST, *, exact: bool = False) -> str:
    """The whole `ipvsadm -Ln [--stats|--rate|…] [--exact]` output, ending in a newline."""
    lines = [f"IP Virtual Server version {snap.version} (size={snap.conn_table_size})"]
    lines.append(_TITLES[view])
    for svc in sort_services(snap.services):
        if view is View.STATS:
            lines.append(f"{service_name(svc):<33}" + _counters(svc.stats, exact))
        elif view is View.RATE:
            r = svc.rates
            values = (
                (None,) * 5
                if r is None
                else (
                    r.conns_per_s,
                    r.in_pkts_per_s,
                    r.out_pkts_per_s,
                    r.in_bytes_per_s,
                    r.out_bytes_per_s,
                )
            )
            lines.append(f"{service_name(svc):<33}" + "".join(largenum(v, exact) for v in values))
        else:
            lines.append(_service_line(svc))
        lines.extend(
            _dest_line(rs, view, exact) for rs in sort_real_servers(svc.real_servers.objects())
        )
    return "\n".join(lines) + "\n"


def format_timeout(timeouts: Timeouts) -> str:
    """`ipvsadm -L --timeout`."""
    return f"Timeout (tcp tcpfin udp): {timeouts.tcp_s} {timeouts.tcp_fin_s} {timeouts.udp_s}\n"


def format_daemons(daemons: Iterable[Daemon]) -> str:
    """`ipvsadm -L --daemon`: master first, then backup."""
    out = []
    for d in sorted(daemons, key=lambda d: int(d.state)):
        kind = "master" if d.state is DaemonState.MASTER else "backup"
        line = f"{kind} sync daemon (mcast={d.interface}, syncid={d.sync_id}"
        if d.max_len:
            line += f", maxlen={d.max_len}"
        if d.group is not None:
            line += f", group={d.group}"
        if d.port:
            line += f", port={d.port}"
        if d.ttl:
            line += f", ttl={d.ttl}"
        out.append(line + ")\n")
    return "".join(out)
