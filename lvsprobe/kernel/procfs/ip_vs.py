"""/proc/net/ip_vs: virtual services and their real servers (`ip_vs_info_seq_show`).

The format is the same on K4.0, K6.1 and K6.12 (only the meaning of InActConn changed in
6.12: it is max(totalconns - activeconns, 0) there). See docs/kernel/procfs.md#ip_vs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import compress, repeat
from operator import not_
from pathlib import Path

from lvsprobe.errors import ParseError
from lvsprobe.kernel.procfs import _hex
from lvsprobe.kernel.procfs._ip_vs_fixed import FORWARD_NAMES, take_fixed
from lvsprobe.kernel.procfs._read import read_proc_text
from lvsprobe.kernel.procfs.limits import IP_VS_MAX_BYTES
from lvsprobe.model import (
    Family,
    Forward,
    IPAddress,
    Persistence,
    Protocol,
    RealServer,
    Service,
    ServiceFlag,
    ServiceKey,
)
from lvsprobe.realserver_table import RealServerRows, RealServerTable

_HEADER = re.compile(
    r"IP Virtual Server version ([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3}) \(size=([0-9]{1,12})\)"
)
_SVC_COLUMNS = ["Prot", "LocalAddress:Port", "Scheduler", "Flags"]
_DEST_COLUMNS = ["->", "RemoteAddress:Port", "Forward", "Weight", "ActiveConn", "InActConn"]
_PROTOCOLS = {"TCP": Protocol.TCP, "UDP": Protocol.UDP, "SCTP": Protocol.SCTP}
# ip_vs_fwd_name(): Bypass is printed as Masq, so MASQ is all /proc can say.
_FORWARDS = {
    "Masq": Forward.MASQ,
    "Local": Forward.LOCAL,
    "Tunnel": Forward.TUNNEL,
    "Route": Forward.ROUTE,
}
_FIXED_FORWARDS = tuple(_FORWARDS[name] for name in FORWARD_NAMES)
# IP_VS_SCHEDNAME_MAXLEN is 16 including the NUL.
_SCHEDULER = re.compile(r"[A-Za-z0-9_]{1,15}")
_I32 = (-(1 << 31), (1 << 31) - 1)
# The usual real-server line exactly as the kernel prints an IPv4 one
# (`"  -> %08X:%04X      %-7s %-6d %-10d %-10d\n"`): matched whole by one regex, the fast path.
# Anything else (IPv6, odd spacing, out-of-range numbers) goes the field-by-field way.
_IPV4_REAL_SERVER = re.compile(
    r"  -> ([0-9A-F]{8}):([0-9A-F]{4}) +(Masq|Local|Tunnel|Route) +([0-9]{1,10})"
    r" +(-?[0-9]{1,10}) +(-?[0-9]{1,10}) *"
)


# Characters of /proc/net/ip_vs taken as one block of lines by the fast path (~4000 lines:
# numpy steps cost per call more than per row).
BLOCK_CHARS = 1 << 18
# Tables at least this big (~16k lines) take their real-server lines by numpy.
NUMPY_MIN_CHARS = 1 << 20


@dataclass(frozen=True)
class IpVsTable:
    """Everything /proc/net/ip_vs shows: version, global conn hash-table size, services."""

    version: str
    conn_table_size: int
    services: tuple[Service, ...]


def read_ip_vs(root: Path) -> IpVsTable:
    """Services from `root/net/ip_vs`; `IPVSUnavailable` when the file does not exist."""
    return parse_ip_vs(read_proc_text(root, "net/ip_vs", max_bytes=IP_VS_MAX_BYTES))


def parse_ip_vs(text: str, source: str = "net/ip_vs") -> IpVsTable:
    """Parse the text of /proc/net/ip_vs into services with their real servers in file order.

    Services appear in the kernel's hash-table order (not sorted); real servers in the
    kernel's list order, the usual IPv4 ones as rows of one `RealServerTable` (see
    `RealServerRows`). Fields /proc does not show (stats, thresholds, PE name, scheduler
    flags, tunnel settings) are left None. Persistence comes as `timeout_jiffies` with
    `timeout_s=None` (HZ is not exported). `flags` is HASHED (every listed service is),
    plus PERSISTENT and ONEPACKET as shown; the kernel never prints `ops` for IPv6 services,
    so ONEPACKET is unknown there. An fwmark service gets its family from its real servers
    (see `_service`).
    """
    # The header from the first lines; the body streamed line by line (a kube-proxy node's
    # ~10^5 lines are not held as a list beside the real servers they become).
    lines = _hex.split_lines(text[: _header_end(text)])
    if not lines:
        raise ParseError(source, None, None, "empty file: expected the 'IP Virtual Server' header")
    match = _HEADER.fullmatch(lines[0].rstrip())
    if match is None:
        raise ParseError(source, 1, lines[0], "expected 'IP Virtual Server version X.Y.Z (size=N)'")
    version = ".".join(match.group(1, 2, 3))
    table_size = int(match.group(4))
    for line_no, expected in ((2, _SVC_COLUMNS), (3, _DEST_COLUMNS)):
        if len(lines) < line_no or lines[line_no - 1].split() != expected:
            shown = lines[line_no - 1] if len(lines) >= line_no else None
            raise ParseError(source, line_no, shown, f"expected the header {' '.join(expected)!r}")
    # Services are assembled at the end, when the rows of the fast path are one table
    # (`_Ipv4RealServers.build`); until then `dests` holds ranges of their rows.
    heads: list[tuple[_ServiceLine, _ServiceHead, list[RealServer | range]]] = []
    current: _ServiceLine | None = None
    current_no = 0
    dests: list[RealServer | range] = []
    fast = _Ipv4RealServers(numpy=len(text) >= NUMPY_MIN_CHARS)
    line_no = 4
    for block in _blocks(text, _header_end(text), BLOCK_CHARS):
        rows = fast.rows  # the row number of this block's first taken line
        count, others = fast.take(block)
        # Runs of taken lines between the others (service lines, IPv6 or odd real servers).
        start = 0
        for index, line in [*others, (count, "")]:
            if index > start:
                if current is None:  # a real-server line before any service line
                    line = _hex.split_lines(block)[start]
                    index = start
                else:
                    run = range(rows, rows + index - start)
                    rows = run.stop
                    last = dests[-1] if dests else None
                    if isinstance(last, range) and last.stop == run.start:
                        dests[-1] = range(last.start, run.stop)  # on from the last block
                    else:
                        dests.append(run)
            if index == count:
                break
            try:
                fields = line.split()
                if fields and fields[0] == "->":
                    if current is None:
                        raise ValueError("real-server line before any service line")
                    dests.append(_real_server(fields))
                else:
                    if current is not None:
                        head = _service_head(current, current_no, dests, source)
                        heads.append((current, head, dests))
                    current, current_no, dests = _service_line(line), line_no + index, []
            except ValueError as exc:
                raise ParseError(source, line_no + index, line, str(exc)) from exc
            start = index + 1
        line_no += count
    if current is not None:
        heads.append((current, _service_head(current, current_no, dests, source), dests))
    table = fast.build()
    services = tuple(
        Service(key, line.scheduler, flags, persistence, _assembled(dests, table))
        for line, (key, flags, persistence), dests in heads
    )
    return IpVsTable(version=version, conn_table_size=table_size, services=services)


def _header_end(text: str) -> int:
    """Where the fourth line starts (or the end of the text)."""
    end = 0
    for _ in range(3):
        end = text.find("\n", end) + 1
        if end == 0:
            return len(text)
    return end


def _blocks(text: str, start: int, size: int) -> Iterator[str]:
    """text[start:] in blocks of whole lines of about `size` characters: a few thousand
    lines at a time are taken by C-level maps, and a kube-proxy node's ~10^5 lines are never
    held as one list."""
    end = len(text)
    while start < end:
        stop = text.find("\n", start + size)
        stop = end if stop < 0 else stop + 1
        yield text[start:stop]
        start = stop


def _assembled(dests: list[RealServer | range], table: RealServerTable) -> Sequence[RealServer]:
    """A service's real servers, in order: rows of the fast path's table.

    The usual service is one range of rows; one with lines the exact parser took (IPv6,
    odd spacing) is a tuple of both kinds.
    """
    if len(dests) == 1 and isinstance(dests[0], range):
        return RealServerRows(table, dests[0].start, dests[0].stop)
    out: list[RealServer] = []
    for dest in dests:
        if isinstance(dest, range):
            out += table.real_servers(dest.start, dest.stop)
        else:
            out.append(dest)
    return tuple(out)


@dataclass(frozen=True)
class _ServiceLine:
    protocol: Protocol | None
    address: IPAddress | None
    port: int
    fwmark: int
    scheduler: str
    one_packet: bool
    timeout_jiffies: int | None
    netmask: int | None
    line: str


@lru_cache(maxsize=1 << 17)
def _service_line(line: str) -> _ServiceLine:
    """`TCP  0A000001:0050 rr [ops] [persistent <jiffies> <mask>]`, or `FWM  %08X …`.

    A pure function of the line, which holds no counter: cached, so that a scrape decodes
    only the service lines that are new (ValueError, on a malformed line, is not cached).
    """
    fields = line.split()
    if len(fields) < 3:
        raise ValueError(f"expected at least 3 fields on a service line, got {len(fields)}")
    proto_name, where, scheduler, *flags = fields
    protocol: Protocol | None = None
    addr: IPAddress | None = None
    svc_port = fwmark = 0
    if proto_name == "FWM":
        fwmark = _hex.hex_number(where, _hex.U32_MAX)
        if fwmark == 0:
            raise ValueError("fwmark service with mark 0")
    elif proto_name in _PROTOCOLS:
        protocol = _PROTOCOLS[proto_name]
        addr, svc_port = _hex.bracketed_endpoint(where)
    else:
        raise ValueError(f"unknown service protocol {proto_name!r} (expected TCP, UDP, SCTP, FWM)")
    if not _SCHEDULER.fullmatch(scheduler):
        raise ValueError(f"bad scheduler name {scheduler!r}")
    one_packet = bool(flags) and flags[0] == "ops"
    if one_packet:
        flags = flags[1:]
    timeout = netmask = None
    if flags:
        if flags[0] != "persistent" or len(flags) != 3:
            raise ValueError(f"unexpected service flags {' '.join(flags)!r}")
        # `persistent %d`: svc->timeout (unsigned jiffies) printed signed; undo the sign.
        timeout = _hex.decimal(flags[1], *_I32) & _hex.U32_MAX
        netmask = _hex.hex_number(flags[2], _hex.U32_MAX)
    return _ServiceLine(
        protocol, addr, svc_port, fwmark, scheduler, one_packet, timeout, netmask, line
    )


class _Ipv4RealServers:
    """The fast path for IPv4 real-server lines (~10x the field-by-field parse).

    A block of lines is matched, split and converted by C-level maps column by column (or,
    for big tables, by numpy: `_ip_vs_fixed`) into the columns of a `RealServerTable`.
    Lines it cannot vouch for (and, on the regex way, a block with a number out of range)
    are left to the exact parser, which raises the ParseError when a line is malformed.
    """

    def __init__(self, numpy: bool = False) -> None:
        self.numpy = numpy
        # One int object per distinct address and port (a converted column makes one per
        # row: 32 B each).
        self._numbers: dict[int, int] = {}
        self._ports: dict[int, int] = {}
        self._new_columns()

    def _new_columns(self) -> None:
        """The six fields of the rows taken, column by column (no object per row)."""
        self.numbers: list[int] = []
        self.ports: list[int] = []
        self.forwards: list[Forward] = []
        self.weights: list[int] = []
        self.actives: list[int] = []
        self.inactives: list[int] = []

    @property
    def rows(self) -> int:
        return len(self.numbers)

    def take(self, block: str) -> tuple[int, list[tuple[int, str]]]:
        """Keep the fields of a block's usual IPv4 real-server lines (in line order); return
        how many lines the block has and the others, with their index in it."""
        fixed = take_fixed(block) if self.numpy else None
        if fixed is None:
            return self._take_matched(block)
        self._extend(
            fixed.addresses,
            fixed.ports,
            map(_FIXED_FORWARDS.__getitem__, fixed.forwards),
            fixed.weights,
            fixed.actives,
            fixed.inactives,
        )
        if len(fixed.taken) == fixed.lines:
            return fixed.lines, []
        lines = _hex.split_lines(block)
        left = set(range(fixed.lines)).difference(fixed.taken)
        return fixed.lines, [(index, lines[index]) for index in sorted(left)]

    def _take_matched(self, block: str) -> tuple[int, list[tuple[int, str]]]:
        lines = _hex.split_lines(block)
        matches = list(map(_IPV4_REAL_SERVER.fullmatch, lines))
        taken = list(filter(None, matches))
        others = list(enumerate(lines))
        if not taken:
            return len(lines), others
        addr_hex, port_hex, forward, weight_dec, active_dec, inactive_dec = zip(
            *map(re.Match.groups, taken),
            strict=True,
        )
        weights = list(map(int, weight_dec))
        actives = list(map(int, active_dec))
        inactives = list(map(int, inactive_dec))
        low, high = _I32
        if max(weights) > high or min(actives) < low or max(actives) > high:
            return len(lines), others
        if min(inactives) < low or max(inactives) > high:
            return len(lines), others
        self._extend(
            list(map(int, addr_hex, repeat(16))),  # 8 hex digits each: the regex says
            list(map(int, port_hex, repeat(16))),
            map(_FORWARDS.__getitem__, forward),
            weights,
            actives,
            inactives,
        )
        return len(lines), list(compress(others, map(not_, matches)))

    def _extend(
        self,
        numbers: list[int],
        ports: list[int],
        forwards: Iterable[Forward],
        weights: list[int],
        actives: list[int],
        inactives: list[int],
    ) -> None:
        self.numbers.extend(map(self._numbers.setdefault, numbers, numbers))
        self.ports.extend(map(self._ports.setdefault, ports, ports))
        self.forwards.extend(forwards)
        self.weights.extend(weights)
        self.actives.extend(actives)
        self.inactives.extend(inactives)

    def build(self) -> RealServerTable:
        """The table of all rows taken, in order (and a fresh start)."""
        table = RealServerTable(
            self.numbers, self.ports, self.forwards, self.weights, self.actives, self.inactives
        )
        self._new_columns()
        return table


def _real_server(fields: list[str]) -> RealServer:
    """`  -> C0A8010A:0050      Route   1      3          5`."""
    if len(fields) != 6:
        raise ValueError(f"expected 6 fields on a real-server line, got {len(fields)}")
    addr, dest_port = _hex.bracketed_endpoint(fields[1])
    forward = _FORWARDS.get(fields[2])
    if forward is None:
        raise ValueError(f"unknown forwarding method {fields[2]!r}")
    return RealServer(
        address=addr,
        port=dest_port,
        forward=forward,
        weight=_hex.decimal(fields[3], 0, _I32[1]),
        # atomic_t printed with %-10d: K6.1 can show a transiently negative count.
        active_conns=_hex.decimal(fields[4], *_I32),
        inactive_conns=_hex.decimal(fields[5], *_I32),
        family=Family.INET6 if addr.version == 6 else Family.INET,
    )


_ServiceHead = tuple[ServiceKey, ServiceFlag, Persistence | None]


def _service_head(
    line: _ServiceLine, line_no: int, dests: list[RealServer | range], source: str
) -> _ServiceHead:
    """Key, flags and persistence of a service; an fwmark service takes its family from
    its real servers.

    /proc prints `FWM  %08X` with no address family. When every real server has the same
    family, that is taken as the service's (a heterogeneous tunnel, 3.18+, could make this
    guess wrong); with no real servers or mixed families `family` stays None.
    """
    family: Family | None
    if line.address is not None:
        family = Family.INET6 if line.address.version == 6 else Family.INET
    else:
        # A range of rows stands for real servers of the fast path: IPv4.
        families = {Family.INET if isinstance(d, range) else d.family for d in dests}
        family = families.pop() if len(families) == 1 else None
    flags = ServiceFlag.HASHED
    persistence = None
    if line.timeout_jiffies is not None and line.netmask is not None:
        flags |= ServiceFlag.PERSISTENT
        try:
            prefix_len = _prefix_len(line.netmask, family)
        except ValueError as exc:
            raise ParseError(source, line_no, line.line, str(exc)) from exc
        persistence = Persistence(
            timeout_s=None, timeout_jiffies=line.timeout_jiffies, prefix_len=prefix_len
        )
    if line.one_packet:
        flags |= ServiceFlag.ONEPACKET
    key = ServiceKey(family, line.protocol, line.address, line.port, line.fwmark)
    return key, flags, persistence


def _prefix_len(mask: int, family: Family | None) -> int:
    """The persistence netmask field (`%08X` of ntohl(svc->netmask)) as a prefix length.

    IPv4: a contiguous netmask, FFFFFF00 -> 24. IPv6: the field holds a raw prefix length
    (ip_vs_ctl.c `plen = (__force __u32) u->netmask`) that ipvsadm sent in host order, so a
    little-endian host shows ntohl(128) = 80000000 and a big-endian one 00000080; both are
    accepted. An fwmark service of unknown family is read as IPv4 when the value is a valid
    IPv4 netmask, else as an IPv6 prefix length.
    """
    if family is not Family.INET6:
        inverted = ~mask & _hex.U32_MAX
        if inverted & (inverted + 1) == 0:
            return 32 - inverted.bit_length()
        if family is Family.INET:
            raise ValueError(f"persistence netmask {mask:08X} is not contiguous")
    if 1 <= mask <= 128:
        return mask
    swapped = int.from_bytes(mask.to_bytes(4, "little"), "big")
    if 1 <= swapped <= 128:
        return swapped
    raise ValueError(f"persistence netmask {mask:08X} is no IPv6 prefix length (1..128)")
