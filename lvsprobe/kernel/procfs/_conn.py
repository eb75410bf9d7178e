"""The columns of /proc/net/ip_vs_conn and ip_vs_conn_sync, and their exact reading (shared).

Both files print the same columns (`ip_vs_conn_seq_show`, `ip_vs_conn_sync_seq_show` in
ip_vs_conn.c); ip_vs_conn adds optional PEName/PEData, ip_vs_conn_sync an Origin column. Each
file declares its `RowFormat` from these columns (`ip_vs_conn.CONN_ROW`,
`ip_vs_conn_sync.SYNC_ROW`); `RowParser` is the exact reading of either, the reference the
counting strategies (`_conn_count`) are checked against.

Eras (docs/kernel/procfs.md#ip_vs_conn):
- K4.0 printed Expires as `(expires - jiffies) / HZ` with `%7lu`: an overdue timer shows a
  huge wrapped number. Since 4.19 it is `%7u` of a clamped delta, so anything above
  2**32 - 1 can only be the K4.0 wrap, and is read as 0 s (overdue).
- K4.0 named template states with the protocol's table (a UDP template shows `UDP`); 4.19+
  uses the template table (`NONE`/`ASSURED`). Both are accepted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from lvsprobe.errors import ParseError
from lvsprobe.kernel.procfs import _hex
from lvsprobe.kernel.procfs._format import Column, RowFormat
from lvsprobe.model import Conn, IPAddress, Origin

# ip_vs_ctpl_state_name_table (ip_vs_proto.c) and the fallbacks of ip_vs_state_name().
TEMPLATE_STATES = ("NONE", "ASSURED")
FALLBACK_STATES = ("ERR!", "?", "BUG!")
# tcp_state_name_table (ip_vs_proto_tcp.c), udp (ip_vs_proto_udp.c), sctp (ip_vs_proto_sctp.c).
TCP_STATES = (
    *("NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT"),
    *("CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK"),
)
UDP_STATES = ("UDP",)
SCTP_STATES = (
    *("NONE", "INIT1", "INIT", "C-SENT", "C-REPLIED", "C-WAIT", "COOKIE", "C-ECHOED"),
    *("ESTABLISHED", "S-SENT", "S-RECEIVED", "S-ACK-SENT", "REJECTED", "CLOSED"),
)
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
_ALL_STATES = tuple(sorted(frozenset().union(*STATES_BY_PROTOCOL.values())))
_OTHER_PROTOCOL = re.compile(r"IP_([0-9]{1,3})")
# IP_VS_PENAME_MAXLEN is 16 with the NUL; the one upstream engine is "sip".
PE_NAME = re.compile(rb"[a-z][a-z0-9_]{0,14}")
ORIGINS = {"LOCAL": Origin.LOCAL, "SYNC": Origin.SYNC}


def protocol_states(name: str) -> frozenset[str]:
    """The state names a row of protocol `name` may show; ValueError if `name` is unknown."""
    states = STATES_BY_PROTOCOL.get(name)
    if states is not None:
        return states
    match = _OTHER_PROTOCOL.fullmatch(name)
    if match is None or int(match.group(1)) > 255:
        raise ValueError(f"unknown protocol {name!r}")
    return _OTHER_STATES


def protocol(tok: bytes) -> str:
    """Pro: `ip_vs_proto_name()`."""
    name = tok.decode("latin-1")
    protocol_states(name)
    return name


def state(protocol_name: str, name: str) -> str:
    """Check a state name against the protocol's table."""
    if name not in protocol_states(protocol_name):
        raise ValueError(f"unknown {protocol_name} state {name!r}")
    return name


def virtual(protocol_name: str, addr: IPAddress, tok: bytes) -> tuple[IPAddress | None, int]:
    """ToIP: the VIP, or for an fwmark template (protocol IP) the mark: (None, mark).

    The kernel stores the mark as `vaddr.ip = htonl(fwmark)`: `%08X` shows it for IPv4;
    `%pI6` shows it as the first 32 bits of an otherwise zero IPv6 address.
    """
    if protocol_name != "IP":
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


def origin(tok: bytes) -> Origin:
    """Origin (ip_vs_conn_sync): SYNC when the backup's sync daemon made the entry."""
    found = ORIGINS.get(tok.decode("latin-1"))
    if found is None:
        raise ValueError(f"bad Origin {tok.decode('latin-1')!r} (expected LOCAL or SYNC)")
    return found


def pe_columns(rest: bytes) -> tuple[str, str]:
    """`<pe-name> <raw pe data>` after Expires (ip_vs_conn only; the data is raw bytes)."""
    name, _, data = rest.partition(b" ")
    if not PE_NAME.fullmatch(name):
        raise ValueError(f"bad PEName {name.decode('latin-1')!r}")
    return name.decode("ascii"), data.decode("latin-1")


def _text(tok: bytes) -> str:
    return tok.decode("latin-1")


# The columns as ip_vs_conn_seq_show prints them (K4.19 ... K6.12):
#   IPv4 entry: "%-3s %08X %04X %08X %04X %s %04X %-11s %7u%s\n"
#   IPv6 entry: "%-3s %pI6 %04X %pI6 %04X %s %04X %-11s %7u%s\n"
# The client and virtual addresses follow the entry's family (cp->af); DestIP (`%s`) is
# "%08X" or "%pI6" by the destination's (cp->daf), which may differ (a tunnel).
_ADDRESS = ("%08X", "%pI6")
PROTOCOL = Column("protocol", ("%-3s",), protocol, names=tuple(STATES_BY_PROTOCOL))
CLIENT_ADDRESS = Column("client_address", _ADDRESS, _hex.address)
CLIENT_PORT = Column("client_port", ("%04X",), _hex.port)
VIRTUAL_ADDRESS = Column("virtual_address", _ADDRESS, _hex.address, same_as="client_address")
VIRTUAL_PORT = Column("virtual_port", ("%04X",), _hex.port)
DEST_ADDRESS = Column("dest_address", _ADDRESS, _hex.address)
DEST_PORT = Column("dest_port", ("%04X",), _hex.port)
STATE = Column("state", ("%-11s",), _text, names=_ALL_STATES)
ORIGIN = Column("origin", ("%-6s",), origin, names=tuple(ORIGINS))
# K4.0: "%7lu" of a wrapped delta (see `expires`).
EXPIRES = Column("expires_s", ("%7u",), expires)
# pe_data: "" or " <pe name> <raw pe data>" (ip_vs_pe_sip.c copies the Call-ID, blanks too).
PE = Column("pe", (" %s %s",), pe_columns, optional=True)
ENTRY = (
    *(PROTOCOL, CLIENT_ADDRESS, CLIENT_PORT, VIRTUAL_ADDRESS, VIRTUAL_PORT),
    *(DEST_ADDRESS, DEST_PORT, STATE),
)


def header(fmt: RowFormat) -> tuple[bytes, ...]:
    """The header line's words: the column titles the kernel prints above the rows."""
    titles = {"origin": b"Origin", "expires_s": b"Expires", "pe": b"PEName PEData"}
    words = b"Pro FromIP FPrt ToIP TPrt DestIP DPrt State".split()
    for column in fmt.columns[len(ENTRY) :]:
        words += titles[column.name].split()
    return tuple(words)


class RowParser:
    """The exact reading of a row into a Conn, remembering decoded tokens (addresses and
    ports repeat). One parser per file read; its memo is bounded and dropped with it."""

    _MAX_CACHED = 1 << 16

    def __init__(self, fmt: RowFormat) -> None:
        self.fmt = fmt
        self.fixed = fmt.fixed_columns
        # Each column's decoder with its memo (token -> value).
        self._decoders: list[tuple[Callable[[bytes], Any], dict[bytes, Any]]] = [
            (column.decode, {}) for column in fmt.columns
        ]
        names = [column.name for column in fmt.columns]
        self._state = names.index("state")
        self._expires = names.index("expires_s")
        self._origin = names.index("origin") if "origin" in names else None

    def _decoded(self, tokens: list[bytes]) -> list[Any]:
        values = []
        for (decode, memo), tok in zip(self._decoders, tokens, strict=False):
            value = memo.get(tok)
            if value is None:
                value = decode(tok)
                if len(memo) >= self._MAX_CACHED:
                    memo.clear()
                memo[tok] = value
            values.append(value)
        return values

    def parse(self, line: bytes) -> Conn:
        """One row into a Conn; ValueError with the reason if any field is malformed."""
        tokens = self.fmt.split(line)
        values = self._decoded(tokens)
        protocol_name = values[0]
        state_name = state(protocol_name, values[self._state])
        caddr, vaddr = values[1], values[3]
        if caddr.version != vaddr.version:
            raise ValueError("FromIP and ToIP are of different address families")
        vaddr, fwmark = virtual(protocol_name, vaddr, tokens[3])
        pe_name = pe_data = None
        if len(values) > self.fixed and values[self.fixed] is not None:
            pe_name, pe_data = values[self.fixed]
        return Conn(
            protocol_name,
            caddr,
            values[2],
            vaddr,
            values[4],
            values[5],
            values[6],
            state_name,
            values[self._expires],
            fwmark,
            pe_name,
            pe_data,
            None if self._origin is None else values[self._origin],
        )


def body_start(data: bytes, fmt: RowFormat) -> int:
    """Check the header line; return the offset of the first row."""
    if not data:
        raise ParseError(fmt.source, None, None, "empty file: expected the header line")
    end = data.find(b"\n")
    line = data if end < 0 else data[:end]
    expected = header(fmt)
    if tuple(line.split()) != expected:
        raise ParseError(
            fmt.source, 1, line, f"expected the header {b' '.join(expected).decode()!r}"
        )
    return len(data) if end < 0 else end + 1


def iter_rows(data: bytes, fmt: RowFormat, start: int, first_line_no: int) -> Iterator[Conn]:
    """Parse the rows of `data[start:]` one by one (streaming: one Conn alive at a time)."""
    parser = RowParser(fmt)
    pos, line_no, size = start, first_line_no, len(data)
    while pos < size:
        stop = data.find(b"\n", pos, size)
        if stop < 0:
            stop = size
        line = data[pos:stop]
        try:
            yield parser.parse(line)
        except ValueError as exc:
            raise ParseError(fmt.source, line_no, line, str(exc)) from exc
        pos, line_no = stop + 1, line_no + 1


def iter_conns(data: bytes, fmt: RowFormat) -> Iterator[Conn]:
    """Every row of a whole file, header checked first."""
    yield from iter_rows(data, fmt, body_start(data, fmt), 2)
