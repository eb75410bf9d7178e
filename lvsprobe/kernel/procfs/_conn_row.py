"""Rows of /proc/net/ip_vs_conn and /proc/net/ip_vs_conn_sync, parsed exactly (shared).

Both files print the same columns (`ip_vs_conn_seq_show`, `ip_vs_conn_sync_seq_show`,
ip_vs_conn.c); ip_vs_conn adds optional PEName/PEData, ip_vs_conn_sync an Origin column.
Every field is checked here; the fast counters in `_conn_fast` fall back to this module
for any chunk they cannot vouch for, so errors always come from here, with a line number.

Eras (docs/kernel/procfs.md#ip_vs_conn):
- K4.0 printed Expires as `(expires - jiffies) / HZ` with `%7lu`: an overdue timer shows a
  huge wrapped number. Since 4.19 it is `%7u` of a clamped delta, so anything above
  2**32 - 1 can only be the K4.0 wrap, and is read as 0 s (overdue).
- K4.0 named template states with the protocol's table (a UDP template shows `UDP`); 4.19+
  uses the template table (`NONE`/`ASSURED`). Both are accepted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace

from lvsprobe.errors import ParseError
from lvsprobe.kernel.procfs import _hex
from lvsprobe.model import Conn, IPAddress, Origin

# ip_vs_ctpl_state_name_table (ip_vs_proto.c) and the fallbacks of ip_vs_state_name().
TEMPLATE_STATES = ("NONE", "ASSURED")
FALLBACK_STATES = ("ERR!", "?", "BUG!")
# tcp_state_name_table (ip_vs_proto_tcp.c), udp (ip_vs_proto_udp.c), sctp (ip_vs_proto_sctp.c).
TCP_STATES = [
    "NONE",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "SYNACK",
]
UDP_STATES = ("UDP",)
SCTP_STATES = [
    "NONE",
    "INIT1",
    "INIT",
    "C-SENT",
    "C-REPLIED",
    "C-WAIT",
    "COOKIE",
    "C-ECHOED",
    "ESTABLISHED",
    "S-SENT",
    "S-RECEIVED",
    "S-ACK-SENT",
    "REJECTED",
    "CLOSED",
]
_OTHER_STATES = frozenset(TEMPLATE_STATES + FALLBACK_STATES)
# ip_vs_proto_name(): these names, or IP_<n> for any other protocol number.
STATES_BY_PROTOCOL: dict[str, frozenset[str]] = {
    "TCP": frozenset(TCP_STATES) | _OTHER_STATES,
    "UDP": frozenset(UDP_STATES) | _OTHER_STATES,
    "SCTP": frozenset(SCTP_STATES) | _OTHER_STATES,
    "IP": _OTHER_STATES,
    "ICMP": _OTHER_STATES,
    "ICMPv6": _OTHER_STATES,
}
_OTHER_PROTOCOL = re.compile(r"IP_([0-9]{1,3})")
# IP_VS_PENAME_MAXLEN is 16 with the NUL; the one upstream engine is "sip".
PE_NAME = re.compile(rb"[a-z][a-z0-9_]{0,14}")
ORIGINS = {"LOCAL": Origin.LOCAL, "SYNC": Origin.SYNC}


@dataclass(frozen=True)
class ConnLayout:
    """What distinguishes the two files: header, Origin column, PE columns."""

    source: str
    header: tuple[bytes, ...]
    origin: bool
    pe: bool

    @property
    def fixed_fields(self) -> int:
        return 10 if self.origin else 9

    def named(self, source: str) -> ConnLayout:
        """The same layout reported under another source name (e.g. a netns path)."""
        return self if source == self.source else replace(self, source=source)


CONN = ConnLayout(
    "net/ip_vs_conn",
    tuple(b"Pro FromIP FPrt ToIP TPrt DestIP DPrt State Expires PEName PEData".split()),
    origin=False,
    pe=True,
)
CONN_SYNC = ConnLayout(
    "net/ip_vs_conn_sync",
    tuple(b"Pro FromIP FPrt ToIP TPrt DestIP DPrt State Origin Expires".split()),
    origin=True,
    pe=False,
)


def protocol_states(name: str) -> frozenset[str]:
    """The state names a row of protocol `name` may show; ValueError if `name` is unknown."""
    states = STATES_BY_PROTOCOL.get(name)
    if states is not None:
        return states
    match = _OTHER_PROTOCOL.fullmatch(name)
    if match is None or int(match.group(1)) > 255:
        raise ValueError(f"unknown protocol {name!r}")
    return _OTHER_STATES


def state(protocol: str, tok: str) -> str:
    """Check a state name against the protocol's table."""
    if tok not in protocol_states(protocol):
        raise ValueError(f"unknown {protocol} state {tok!r}")
    return tok


def virtual(protocol: str, tok: bytes) -> tuple[IPAddress | None, int]:
    """ToIP: the VIP, or for an fwmark template (protocol IP) the mark: (None, mark).

    The kernel stores the mark as `vaddr.ip = htonl(fwmark)`: `%08X` shows it for IPv4;
    `%pI6` shows it as the first 32 bits of an otherwise zero IPv6 address.
    """
    addr = _hex.address(tok)
    if protocol != "IP":
        return addr, 0
    if addr.version == 6:
        if int(addr) & ((1 << 96) - 1):
            raise ValueError(
                f"fwmark template ToIP {tok.decode('latin-1')!r} has bits below the mark"
            )
        return None, int(addr) >> 96
    return None, int(addr)


def expires(tok: bytes) -> int:
    """Expires in whole seconds; a K4.0 wrapped value (> 2**32 - 1) reads as 0 (overdue)."""
    if not tok.isdigit():
        raise ValueError(f"bad Expires {tok.decode('latin-1')!r} (expected a decimal number)")
    value = int(tok) if len(tok) <= 20 else _hex.U64_MAX + 1
    if value > _hex.U64_MAX:
        raise ValueError(f"Expires {tok.decode('latin-1')[:24]!r} out of range (over 64 bits)")
    return 0 if value > _hex.U32_MAX else value


def split_row(line: bytes, layout: ConnLayout) -> list[bytes]:
    """Whitespace fields of a row; with PE columns the remainder stays one last field."""
    n = layout.fixed_fields
    fields = line.split(None, n) if layout.pe else line.split()
    if len(fields) < n or (not layout.pe and len(fields) != n):
        raise ValueError(f"expected {n} fields, got {len(fields)}")
    return fields


def pe_columns(rest: bytes) -> tuple[str, str]:
    """`<pe-name> <raw pe data>` after Expires (ip_vs_conn only; the data is raw bytes)."""
    name, _, data = rest.partition(b" ")
    if not PE_NAME.fullmatch(name):
        raise ValueError(f"bad PEName {name.decode('latin-1')!r}")
    return name.decode("ascii"), data.decode("latin-1")


class RowParser:
    """Parses rows into Conns, remembering decoded addresses (VIPs and real servers repeat).

    One parser per file read; the cache is bounded and dropped with the parser.
    """

    _MAX_CACHED = 1 << 16

    def __init__(self, layout: ConnLayout) -> None:
        self.layout = layout
        self._addresses: dict[bytes, IPAddress] = {}
        self._ports: dict[bytes, int] = {}
        self._names: dict[tuple[bytes, bytes], tuple[str, str]] = {}

    def address(self, tok: bytes) -> IPAddress:
        addr = self._addresses.get(tok)
        if addr is None:
            addr = _hex.address(tok)
            if len(self._addresses) >= self._MAX_CACHED:
                self._addresses.clear()
            self._addresses[tok] = addr
        return addr

    def port(self, tok: bytes) -> int:
        value = self._ports.get(tok)
        if value is None:
            value = _hex.port(tok)
            if len(self._ports) >= self._MAX_CACHED:
                self._ports.clear()
            self._ports[tok] = value
        return value

    def names(self, protocol: bytes, state_tok: bytes) -> tuple[str, str]:
        """(protocol, state) as str, checked against the state tables."""
        names = self._names.get((protocol, state_tok))
        if names is None:
            proto = protocol.decode("latin-1")
            names = (proto, state(proto, state_tok.decode("latin-1")))
            if len(self._names) < self._MAX_CACHED:
                self._names[(protocol, state_tok)] = names
        return names

    def parse(self, line: bytes) -> Conn:
        """One row into a Conn; ValueError with the reason if any field is malformed."""
        layout = self.layout
        fields = split_row(line, layout)
        protocol, state_name = self.names(fields[0], fields[7])
        if (b":" in fields[1]) != (b":" in fields[3]):
            raise ValueError("FromIP and ToIP are of different address families")
        if protocol == "IP":
            vaddr, fwmark = virtual(protocol, fields[3])
        else:
            vaddr, fwmark = self.address(fields[3]), 0
        origin = None
        if layout.origin:
            origin = ORIGINS.get(fields[8].decode("latin-1"))
            if origin is None:
                raise ValueError(
                    f"bad Origin {fields[8].decode('latin-1')!r} (expected LOCAL or SYNC)"
                )
        pe_name = pe_data = None
        if len(fields) > layout.fixed_fields:
            pe_name, pe_data = pe_columns(fields[-1])
        return Conn(
            protocol,
            self.address(fields[1]),
            self.port(fields[2]),
            vaddr,
            self.port(fields[4]),
            self.address(fields[5]),
            self.port(fields[6]),
            state_name,
            expires(fields[layout.fixed_fields - 1]),
            fwmark,
            pe_name,
            pe_data,
            origin,
        )


def body_start(data: bytes, layout: ConnLayout) -> int:
    """Check the header line; return the offset of the first row."""
    if not data:
        raise ParseError(layout.source, None, None, "empty file: expected the header line")
    end = data.find(b"\n")
    header = data if end < 0 else data[:end]
    if tuple(header.split()) != layout.header:
        expected = b" ".join(layout.header).decode()
        raise ParseError(layout.source, 1, header, f"expected the header {expected!r}")
    return len(data) if end < 0 else end + 1


def iter_rows(data: bytes, layout: ConnLayout, start: int, first_line_no: int) -> Iterator[Conn]:
    """Parse the rows of `data[start:]` one by one (streaming: one Conn alive at a time)."""
    parser = RowParser(layout)
    pos, line_no, size = start, first_line_no, len(data)
    while pos < size:
        stop = data.find(b"\n", pos, size)
        if stop < 0:
            stop = size
        line = data[pos:stop]
        try:
            yield parser.parse(line)
        except ValueError as exc:
            raise ParseError(layout.source, line_no, line, str(exc)) from exc
        pos, line_no = stop + 1, line_no + 1


def iter_conns(data: bytes, layout: ConnLayout) -> Iterator[Conn]:
    """Every row of a whole file, header checked first."""
    yield from iter_rows(data, layout, body_start(data, layout), 2)
