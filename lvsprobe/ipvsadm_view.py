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
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate, repeat
from operator import attrgetter

from lvsprobe.ipvsadm_columns import (
    MISSING,
    Cell,
    ColumnOf,
    Named,
    Number,
    address_words,
    cmp_words,
    dest_lines,
    format_lines,
    largenum,
    largenum_cell,
    left,
    record_columns,
    stat_column,
    words_close,
)
from lvsprobe.model import (
    RATE_FIELDS,
    STAT_FIELDS,
    Daemon,
    DaemonState,
    Family,
    Forward,
    IPAddress,
    Service,
    ServiceFlag,
    Snapshot,
    Timeouts,
)

__all__ = [
    "View",
    "addr_port",
    "format_daemons",
    "format_list",
    "format_timeout",
    "largenum",
    "list_texts",
    "service_name",
    "sort_services",
]


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

# The lines are made a batch of about this many at a time: the text of a batch is held until
# it is written (~80 B a line).
BATCH_LINES = 4096


def _family_of(svc: Service) -> Family:
    if svc.key.family is not None:
        return svc.key.family
    families = svc.real_servers.address_families
    return families[0] if families else Family.INET


def _service_key(svc: Service) -> tuple[int, int, int, tuple[int, ...], int]:
    """What ipvsadm compares services by, in its order (the address: its words compared)."""
    key = svc.key
    family = _family_of(svc)
    words = address_words(key.address)
    compared = words if family == Family.INET6 else words[:1]
    return key.fwmark, int(family), int(key.protocol or 0), compared, key.port


def sort_services(services: Iterable[Service]) -> list[Service]:
    """ipvsadm's order: fwmark, address family, protocol, address, port.

    Sorted by `_service_key` where C's compare agrees with it (addresses of a family less
    than 2^31 apart in each word), else by ipvsadm's compare itself.
    """
    listed = list(services)
    keys = list(map(_service_key, listed))
    by_family: dict[int, list[tuple[int, ...]]] = {}
    for _, family, _, words, _ in keys:
        by_family.setdefault(family, []).append(words)
    if all(words_close(zip(*words, strict=True)) for words in by_family.values()):
        return list(map(listed.__getitem__, sorted(range(len(listed)), key=keys.__getitem__)))

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
        wa, wb = address_words(a.key.address), address_words(b.key.address)
        r = cmp_words(wa, wb, fa == Family.INET6)
        return r or a.key.port - b.key.port

    return sorted(listed, key=functools.cmp_to_key(cmp))


def addr_port(address: IPAddress, port: int) -> str:
    """`198.18.1.11:80` or `[2001:2::11]:80`, as ipvsadm -n prints them."""
    text = str(address)  # not format(): ipaddress's __format__ is Python code (10^4 a view)
    return f"{text}:{port}" if address.version == 4 else f"[{text}]:{port}"


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


def _service_lines(services: Sequence[Service], view: View, exact: bool) -> list[str]:
    """The services' own lines: name and counters (--stats, --rate), else the list's."""
    if view is View.STATS:
        counters = record_columns([svc.stats for svc in services], STAT_FIELDS)
    elif view is View.RATE:
        counters = record_columns([svc.rates for svc in services], RATE_FIELDS)
    else:
        return list(map(_service_line, services))
    names = list(map(service_name, services))
    return format_lines("%-33s", names, zip(repeat(largenum_cell(exact)), counters))


_DEST_HEAD = "  -> %-28s"
_FORWARD_NAMES = {forward: forward.ipvsadm_name for forward in Forward}
_RATE = Number(" %8d", f" {MISSING:>8}")  # ipvsadm prints cps and pps whole, even without --exact


def _dest_cells(view: View, exact: bool) -> tuple[tuple[ColumnOf, Cell], ...]:
    """What follows a real server's name in each view, a table column each."""
    if view is View.STATS:
        return tuple((stat_column(index), largenum_cell(exact)) for index in range(5))
    if view is View.RATE:
        return (
            *((stat_column(index), _RATE) for index in range(5, 8)),
            *((stat_column(index), largenum_cell(exact)) for index in range(8, 10)),
        )
    conns = ((attrgetter("active_conns"), left(10)), (attrgetter("inactive_conns"), left(10)))
    if view is View.THRESHOLDS:
        return (
            (attrgetter("upper_thresholds"), left(10)),
            (attrgetter("lower_thresholds"), left(10)),
            *conns,
        )
    if view is View.PERSISTENT_CONN:
        return (
            (attrgetter("weights"), left(9)),
            (attrgetter("persistent_conns"), left(11)),
            *conns,
        )
    return (
        (attrgetter("forwards"), Named(" %-7s", _FORWARD_NAMES)),
        (attrgetter("weights"), left(6)),
        *conns,
    )


def _batch_texts(services: Sequence[Service], view: View, exact: bool, rows: int) -> Iterator[str]:
    """The lines of these services (in ipvsadm's order), each followed by its real servers',
    in pieces of about `rows` real servers (a service of 10^5 is many pieces)."""
    parts = [svc.real_servers for svc in services]
    heads = _service_lines(services, view, exact)
    firsts = list(accumulate(map(len, parts), initial=0))  # each service's first real server
    head = made = 0
    for dests in dest_lines(parts, _DEST_HEAD, _dest_cells(view, exact), rows):
        out: list[str] = []
        at = 0
        while head < len(heads) and firsts[head] < made + len(dests):
            out.extend(dests[at : firsts[head] - made])
            at = firsts[head] - made
            out.append(heads[head])
            head += 1
        out.extend(dests[at:])
        out.append("")
        made += len(dests)
        yield "\n".join(out)
    if head < len(heads):  # services after the last real server: empty ones
        yield "\n".join([*heads[head:], ""])


def list_texts(
    snap: Snapshot, view: View = View.LIST, *, exact: bool = False, batch_lines: int = BATCH_LINES
) -> Iterator[str]:
    """`ipvsadm -Ln [--stats|--rate|…] [--exact]` in pieces of whole lines: the header, then
    a batch of services at a time (about `batch_lines` lines, up to twice that)."""
    yield f"IP Virtual Server version {snap.version} (size={snap.conn_table_size})\n"
    yield _TITLES[view] + "\n"
    batch: list[Service] = []
    held = 0
    for svc in sort_services(snap.services):
        batch.append(svc)
        held += 1 + len(svc.real_servers)
        if held >= batch_lines:
            yield from _batch_texts(batch, view, exact, batch_lines)
            batch, held = [], 0
    if batch:
        yield from _batch_texts(batch, view, exact, batch_lines)


def format_list(snap: Snapshot, view: View = View.LIST, *, exact: bool = False) -> str:
    """The whole `ipvsadm -Ln [--stats|--rate|…] [--exact]` output, ending in a newline."""
    return "".join(list_texts(snap, view, exact=exact))


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
