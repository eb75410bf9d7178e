"""/proc/net/ip_vs: virtual services and their real servers (`ip_vs_info_seq_show`).

The format is the same on K4.0, K6.1 and K6.12 (only the meaning of InActConn changed in
6.12: it is max(totalconns - activeconns, 0) there). See docs/kernel/procfs.md#ip_vs.

A real-server line is declared once, `REAL_SERVER_ROW`, from the kernel's printf. It is read
the exact way (`_real_server`), or, in tables of `NUMPY_MIN_CHARS` or more, by the columnar
strategy (`_Ipv4RealServers`: its IPv4 layout checked and converted with numpy, any line it
does not take read the exact way). Service lines are few and read exactly; a caller that
reads the file again and again passes a `ParseCache`, and only new service lines are decoded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from lvsprobe.errors import ParseError
from lvsprobe.kernel.procfs import _hex
from lvsprobe.kernel.procfs._columnar import Columns, decimal_values, hex_values
from lvsprobe.kernel.procfs._format import Column, RowFormat
from lvsprobe.kernel.procfs._ip_vs_services import (
    ServiceHead,
    ServiceLine,
    ServiceLines,
    service_head,
)
from lvsprobe.kernel.procfs._packed import NameCodes
from lvsprobe.kernel.procfs._read import read_proc_chunks, read_proc_text
from lvsprobe.kernel.procfs.cache import ParseCache
from lvsprobe.kernel.procfs.limits import IP_VS_MAX_BYTES
from lvsprobe.model import (
    Family,
    Forward,
    RealServer,
    Service,
)
from lvsprobe.model.realservers import RealServerTable, TableBuilder
from lvsprobe.model.service_rows import RealServerRows

_HEADER = re.compile(
    r"IP Virtual Server version ([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3}) \(size=([0-9]{1,12})\)"
)
_SVC_COLUMNS = ["Prot", "LocalAddress:Port", "Scheduler", "Flags"]
_DEST_COLUMNS = ["->", "RemoteAddress:Port", "Forward", "Weight", "ActiveConn", "InActConn"]
# ip_vs_fwd_name(): Bypass is printed as Masq, so MASQ is all /proc can say.
_FORWARDS = {
    "Masq": Forward.MASQ,
    "Local": Forward.LOCAL,
    "Tunnel": Forward.TUNNEL,
    "Route": Forward.ROUTE,
}
_I32 = (-(1 << 31), (1 << 31) - 1)


def _arrow(tok: str) -> str:
    if tok != "->":
        raise ValueError(f"expected '->', got {tok!r}")
    return tok


def _forward(tok: str) -> Forward:
    forward = _FORWARDS.get(tok)
    if forward is None:
        raise ValueError(f"unknown forwarding method {tok!r}")
    return forward


def _decimal_column(name: str, printf: str, bounds: tuple[int, int]) -> Column:
    return Column(
        name, (printf,), partial(_hex.decimal, low=bounds[0], high=bounds[1]), bounds=bounds
    )


# ip_vs_info_seq_show (ip_vs_ctl.c), one line per real server after its service's line:
#   "  -> %08X:%04X      %-7s %-6d %-10d %-10d\n"      (IPv4)
#   "  -> [%pI6]:%04X      %-7s %-6d %-10d %-10d\n"    (IPv6)
# fwd_name, weight, activeconns, inactconns: atomic_t printed with %d, so K6.1 can show a
# transiently negative count; a weight is never negative.
REAL_SERVER_ROW = RowFormat(
    "net/ip_vs",
    "  {arrow} {endpoint}      {forward} {weight} {active_conns} {inactive_conns}",
    (
        Column("arrow", ("->",), _arrow),
        Column("endpoint", ("%08X:%04X", "[%pI6]:%04X"), _hex.bracketed_endpoint),
        Column("forward", ("%-7s",), _forward, names=tuple(_FORWARDS)),
        _decimal_column("weight", "%-6d", (0, _I32[1])),
        _decimal_column("active_conns", "%-10d", _I32),
        _decimal_column("inactive_conns", "%-10d", _I32),
    ),
    noun=" on a real-server line",
)
# Characters of /proc/net/ip_vs taken as one block of lines by the columnar strategy
# (~4000 lines: numpy steps cost per call more than per row).
BLOCK_CHARS = 1 << 18
# Tables at least this big (~1000 lines) take their real-server lines the columnar way.
NUMPY_MIN_CHARS = 1 << 16
# The header's three lines fit in the first page the kernel's seq_file makes.
HEADER_READ_BYTES = 4096


@dataclass(frozen=True)
class IpVsTable:
    """Everything /proc/net/ip_vs shows: version, global conn hash-table size, services."""

    version: str
    conn_table_size: int
    services: tuple[Service, ...]


def read_ip_vs(root: Path, cache: ParseCache | None = None) -> IpVsTable:
    """Services from `root/net/ip_vs`; `IPVSUnavailable` when the file does not exist."""
    text = read_proc_text(root, "net/ip_vs", max_bytes=IP_VS_MAX_BYTES)
    return parse_ip_vs(text, cache=cache)


def read_ip_vs_header(root: Path) -> IpVsTable:
    """Only the version and table size of `root/net/ip_vs`, services left empty: what a
    reader that takes the services from netlink needs of the file (IPVS loaded or not). The
    kernel makes only the first page of the file for it, not a line per real server."""
    chunks = read_proc_chunks(root, "net/ip_vs", max_bytes=IP_VS_MAX_BYTES, size=HEADER_READ_BYTES)
    try:
        first = next(chunks, b"").decode("latin-1")
    finally:
        chunks.close()
    version, table_size = _parse_header(first[: _header_end(first)], "net/ip_vs")
    return IpVsTable(version=version, conn_table_size=table_size, services=())


def _parse_header(head: str, source: str) -> tuple[str, int]:
    """The version and table size from the file's three header lines."""
    lines = _hex.split_lines(head)
    if not lines:
        raise ParseError(source, None, None, "empty file: expected the 'IP Virtual Server' header")
    match = _HEADER.fullmatch(lines[0].rstrip())
    if match is None:
        raise ParseError(source, 1, lines[0], "expected 'IP Virtual Server version X.Y.Z (size=N)'")
    for line_no, expected in ((2, _SVC_COLUMNS), (3, _DEST_COLUMNS)):
        if len(lines) < line_no or lines[line_no - 1].split() != expected:
            shown = lines[line_no - 1] if len(lines) >= line_no else None
            raise ParseError(source, line_no, shown, f"expected the header {' '.join(expected)!r}")
    return ".".join(match.group(1, 2, 3)), int(match.group(4))


def parse_ip_vs(text: str, source: str = "net/ip_vs", cache: ParseCache | None = None) -> IpVsTable:
    """Parse the text of /proc/net/ip_vs into services with their real servers in file order.

    Services appear in the kernel's hash-table order (not sorted); real servers in the
    kernel's list order, as rows of one `RealServerTable` (see `RealServerRows`). Fields
    /proc does not show (stats, thresholds, PE name, scheduler flags, tunnel settings) are
    left None. Persistence comes as `timeout_jiffies` with
    `timeout_s=None` (HZ is not exported). `flags` is HASHED (every listed service is),
    plus PERSISTENT and ONEPACKET as shown; the kernel never prints `ops` for IPv6 services,
    so ONEPACKET is unknown there. An fwmark service gets its family from its real servers
    (see `service_head`). `cache` holds the service lines the last parse decoded.
    """
    # The header from the first lines; the body streamed line by line (a kube-proxy node's
    # ~10^5 lines are not held as a list beside the real servers they become).
    version, table_size = _parse_header(text[: _header_end(text)], source)
    # Services are assembled at the end, when the rows of the fast path are one table
    # (`_Ipv4RealServers.build`); until then `dests` holds ranges of their rows.
    heads: list[tuple[ServiceLine, ServiceHead, list[RealServer | range]]] = []
    current: ServiceLine | None = None
    current_no = 0
    dests: list[RealServer | range] = []
    fast = _Ipv4RealServers(columnar=len(text) >= NUMPY_MIN_CHARS)
    service_lines = ServiceLines(cache)
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
                if line.split(None, 1)[:1] == ["->"]:
                    if current is None:
                        raise ValueError("real-server line before any service line")
                    dests.append(_real_server(line))
                else:
                    if current is not None:
                        head = service_head(current, current_no, dests, source)
                        heads.append((current, head, dests))
                    current, current_no, dests = service_lines.read(line), line_no + index, []
            except ValueError as exc:
                raise ParseError(source, line_no + index, line, str(exc)) from exc
            start = index + 1
        line_no += count
    if current is not None:
        heads.append((current, service_head(current, current_no, dests, source), dests))
    service_lines.keep()
    assembled = _assembled([dests for _, _, dests in heads], fast.build())
    services = tuple(
        Service(key, line.scheduler, flags, persistence, service_rows)
        for (line, (key, flags, persistence), _), service_rows in zip(heads, assembled, strict=True)
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


def _assembled(
    services: list[list[RealServer | range]], fast: RealServerTable
) -> list[RealServerRows]:
    """Each service's real servers as rows of one table, in file order.

    The fast path's table is that table when it took every real-server line (the usual
    file); lines the exact parser took (IPv6, odd spacing) are joined in between.
    """
    builder = TableBuilder()
    bounds = []
    for dests in services:
        start = builder.rows
        for dest in dests:
            if isinstance(dest, range):
                builder.add_rows(fast, dest.start, dest.stop)
            else:
                builder.add(dest)
        bounds.append((start, builder.rows))
    table = builder.build()
    return [RealServerRows(table, start, stop) for start, stop in bounds]


class _Ipv4RealServers:
    """The columnar strategy for real-server lines (~10x the exact parse per line).

    A block of lines is cut by REAL_SERVER_ROW's IPv4 layout (`_columnar`); the lines it takes
    are converted column by column into the columns of a `RealServerTable`. Lines it does
    not take (service lines, IPv6, wider numbers, a number out of range, anything malformed)
    are left to the exact parser, which raises the ParseError when a line is malformed.
    With `columnar=False` (a small table) it takes no line: all are read exactly.
    """

    def __init__(self, columnar: bool = False) -> None:
        self.columns = None
        if columnar:
            endpoint = [column.name for column in REAL_SERVER_ROW.columns].index("endpoint")
            self.columns = Columns(REAL_SERVER_ROW.layouts(lambda lay: lay.choice[endpoint] == 0))
            (layout,) = self.columns.layouts
            self.forward_codes = NameCodes(tuple(_FORWARDS), layout.span("forward").width)
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
        if self.columns is None:
            lines = _hex.split_lines(block)
            return len(lines), list(enumerate(lines))
        split = self.columns.split(block.encode("latin-1"))
        others = [(index, line.decode("latin-1")) for index, line in split.refused]
        if not split.taken:
            return split.lines, others
        (taken,) = split.taken
        matrix = taken.matrix
        forward = self.forward_codes.codes(matrix, taken.layout.span("forward"))
        ok = forward >= 0
        numbers = []
        for name in ("weight", "active_conns", "inactive_conns"):
            bounds = _I32 if name != "weight" else (0, _I32[1])
            value, in_range = decimal_values(matrix, taken.layout.span(name), bounds)
            ok &= in_range
            numbers.append(value[ok].tolist())
        self._extend(
            hex_values(matrix, taken.layout.span("endpoint", 0))[ok].tolist(),
            hex_values(matrix, taken.layout.span("endpoint", 1))[ok].tolist(),
            map(_FORWARD_BY_CODE.__getitem__, forward[ok].tolist()),
            *numbers,
        )
        if not ok.all():  # out of range: the exact parser says so
            for row in (~ok).nonzero()[0].tolist():
                line = matrix[row, :-1].tobytes().decode("latin-1")
                others.append((int(taken.rows[row]), line))
            others.sort()
        return split.lines, others

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
            [Family.INET] * len(self.numbers),
            self.numbers,
            self.ports,
            self.forwards,
            self.weights,
            self.actives,
            self.inactives,
        )
        self._new_columns()
        return table


_FORWARD_BY_CODE = tuple(_FORWARDS.values())


def _real_server(line: str) -> RealServer:
    """`  -> C0A8010A:0050      Route   1      3          5`: the exact reading."""
    _, (addr, dest_port), forward, weight, active, inactive = REAL_SERVER_ROW.decode(
        REAL_SERVER_ROW.split(line)
    )
    return RealServer(
        address=addr,
        port=dest_port,
        forward=forward,
        weight=weight,
        active_conns=active,
        inactive_conns=inactive,
        family=Family.INET6 if addr.version == 6 else Family.INET,
    )
