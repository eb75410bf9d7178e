"""/proc/net/ip_vs: virtual services and their real servers (`ip_vs_info_seq_show`).

The format is the same on K4.0, K6.1 and K6.12 (only the meaning of InActConn changed in
6.12: it is max(totalconns - activeconns, 0) there). See KERNEL-NOTES §1.1.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

from lvsprobe.errors import ParseError
from lvsprobe.kernel.procfs import _hex
from lvsprobe.kernel.procfs._read import read_proc_text
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


@dataclass(frozen=True)
class IpVsTable:
    """Everything /proc/net/ip_vs shows: version, global conn hash-table size, services."""

    version: str
    conn_table_size: int
    services: tuple[Service, ...]


def read_ip_vs(root: Path) -> IpVsTable:
    """Services from `root/net/ip_vs`; `IPVSUnavailable` when the file does not exist."""
    return parse_ip_vs(read_proc_text(root, "net/ip_vs"))


def parse_ip_vs(text: str, source: str = "net/ip_vs") -> IpVsTable:
    """Parse the text of /proc/net/ip_vs into services with their real servers in file order.

    Services appear in the kernel's hash-table order (not sorted); real servers in the
    kernel's list order. Fields /proc does not show (stats, thresholds, PE name, scheduler
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
    # Services are assembled at the end, when the real servers of the fast path are built
    # all at once (`_Ipv4RealServers.build`); until then `dests` holds their row numbers.
    heads: list[tuple[_ServiceLine, _ServiceHead, list[RealServer | int]]] = []
    current: _ServiceLine | None = None
    dests: list[RealServer | int] = []
    fast = _Ipv4RealServers()
    for line_no, line in enumerate(_iter_lines(text, _header_end(text)), start=4):
        if current is not None:
            row = fast.parse(line)
            if row is not None:
                dests.append(row)
                continue
        try:
            fields = line.split()
            if fields and fields[0] == "->":
                if current is None:
                    raise ValueError("real-server line before any service line")
                dests.append(_real_server(fields))
            else:
                if current is not None:
                    heads.append((current, _service_head(current, dests, source), dests))
                current, dests = _service_line(fields, line_no, line), []
        except ValueError as exc:
            raise ParseError(source, line_no, line, str(exc)) from exc
    if current is not None:
        heads.append((current, _service_head(current, dests, source), dests))
    built = fast.build()
    services = tuple(
        Service(
            key,
            line.scheduler,
            flags,
            persistence,
            tuple([built[d] if isinstance(d, int) else d for d in dests]),
        )
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


def _iter_lines(text: str, start: int) -> Iterator[str]:
    """The lines of text[start:], split on "\n" only, as `_hex.split_lines` splits them."""
    size = len(text)
    find = text.find
    while start < size:
        end = find("\n", start)
        if end < 0:
            yield text[start:]
            return
        yield text[start:end]
        start = end + 1


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
    line_no: int
    line: str


def _service_line(fields: list[str], line_no: int, line: str) -> _ServiceLine:
    """`TCP  0A000001:0050 rr [ops] [persistent <jiffies> <mask>]`, or `FWM  %08X …`."""
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
        protocol, addr, svc_port, fwmark, scheduler, one_packet, timeout, netmask, line_no, line
    )


# RealServer's fields in order, and the slot setters `_Ipv4RealServers.build` fills them by.
_RS_FIELDS = tuple(f.name for f in dataclasses.fields(RealServer))
_RS_SETTERS = tuple(getattr(RealServer, name).__set__ for name in _RS_FIELDS)
# The fields after the six a row gives: their defaults, but the family is known (IPv4).
_RS_DEFAULTS: dict[str, object] = {
    f.name: f.default
    for f in dataclasses.fields(RealServer)
    if f.default is not dataclasses.MISSING
}
_RS_DEFAULTS["family"] = Family.INET
assert _RS_FIELDS[:6] == ("address", "port", "forward", "weight", "active_conns", "inactive_conns")


class _Ipv4RealServers:
    """The fast path for IPv4 real-server lines (~10x the field-by-field parse).

    Addresses are decoded once per distinct hex string (a backend serving several
    services repeats). `parse` returns None for any line it cannot vouch for; the exact
    parser then decides, and raises the ParseError when the line is malformed.
    """

    def __init__(self) -> None:
        # Keyed by the address's int, which the IPv4Address then holds: no key of its own.
        self._addresses: dict[int, IPAddress] = {}
        # The six fields of the parsed rows, column by column (no object per row).
        self.columns: tuple[list[object], ...] = ([], [], [], [], [], [])

    def parse(self, line: str) -> int | None:
        """The row number of a usual IPv4 line, its fields kept for `build`."""
        match = _IPV4_REAL_SERVER.fullmatch(line)
        if match is None:
            return None
        addr_hex, port_hex, forward, weight_dec, active_dec, inactive_dec = match.groups()
        weight, active, inactive = int(weight_dec), int(active_dec), int(inactive_dec)
        low, high = _I32
        if weight > high or not (low <= active <= high and low <= inactive <= high):
            return None
        number = int(addr_hex, 16)  # the regex checked the 8 hex digits already
        addr = self._addresses.get(number)
        if addr is None:
            addr = self._addresses[number] = ipaddress.IPv4Address(number)
        addresses, ports, forwards, weights, actives, inactives = self.columns
        row = len(addresses)
        addresses.append(addr)
        ports.append(int(port_hex, 16))
        forwards.append(_FORWARDS[forward])
        weights.append(weight)
        actives.append(active)
        inactives.append(inactive)
        return row

    def build(self) -> list[RealServer]:
        """The RealServers of all rows, in order: `RealServer(*row, family=INET)` each.

        The frozen dataclass's __init__ sets its 13 slots one Python-level call each
        (~2.5 µs a real server, a third of a kube-proxy node's parse); here each slot is
        set for every row by its descriptor in one C-level map, as __init__ does through
        object.__setattr__ (half the cost, measured once all rows are in). RealServer has
        no __post_init__ to skip; the tests compare with __init__'s objects.
        """
        n = len(self.columns[0])
        out: list[RealServer] = list(map(object.__new__, repeat(RealServer, n)))
        if n:
            columns: list[Iterable[object]] = list(self.columns)
            columns += [repeat(_RS_DEFAULTS[name], n) for name in _RS_FIELDS[len(columns) :]]
            for setter, column in zip(_RS_SETTERS, columns, strict=True):
                deque(map(setter, out, column), maxlen=0)
        self.columns = ([], [], [], [], [], [])
        return out


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


def _service_head(line: _ServiceLine, dests: list[RealServer | int], source: str) -> _ServiceHead:
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
        # A row number stands for a real server of the fast path: IPv4.
        families = {Family.INET if isinstance(d, int) else d.family for d in dests}
        family = families.pop() if len(families) == 1 else None
    flags = ServiceFlag.HASHED
    persistence = None
    if line.timeout_jiffies is not None and line.netmask is not None:
        flags |= ServiceFlag.PERSISTENT
        try:
            prefix_len = _prefix_len(line.netmask, family)
        except ValueError as exc:
            raise ParseError(source, line.line_no, line.line, str(exc)) from exc
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
