"""Counting IPv4 rows of /proc/net/ip_vs_conn{,_sync} column by column (fixed offsets).

An IPv4 row with a 3-letter protocol (TCP, UDP, IP), a 7-digit Expires and no PE data has
the same length and field offsets in every row (`"%-3s %08X %04X %08X %04X %08X %04X %-11s
[%-6s ]%7u\\n"`, docs/kernel/procfs.md#ip_vs_conn). A block of only such rows is checked and
counted with strided slices (`block[col::row_bytes]`, one C pass per column, nothing per
row in Python):
- every separator column is blanks, every address and port column left out of the key hex
  digits, Expires blanks then digits (at least one), the last column of each row a newline;
- the columns that are not part of the key (client, Expires; the real server when counting
  per service) are overwritten with NULs, and the client port with one byte saying whether
  it was 0000 (templates); the rows are then counted whole by `Counter`.
Blocks of `HASHED_MIN_ROWS` rows or more are counted by a numpy row hash instead
(`_conn_hashed`; the same canonical rows, exactly). Each distinct counted row is decoded
once, when a block first brings it (`FixedKeys.decode`, which checks protocol, state,
Origin and the key's addresses), or taken from the rows the previous summary of the same
layout and granularity decoded (a scrape decodes only the rows that are new). A block
with any other row (IPv6, SCTP, PE data, a wide Expires, anything malformed, a row that
does not decode) is refused as a whole, its counts taken back, and goes the exact way
(`_conn_summary`), so errors still name their line.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterator
from itertools import islice

from lvsprobe.kernel.procfs import _conn_row, _hex
from lvsprobe.kernel.procfs._conn_hashed import HashedRows, PackedRows
from lvsprobe.kernel.procfs._conn_row import ConnLayout
from lvsprobe.model import ConnCountKey, IPAddress, is_template_entry

# Offsets in a row with a 3-letter protocol.
_PROTO = slice(0, 3)
_CADDR, _CPORT, _VADDR, _VPORT, _DADDR, _DPORT = 4, 13, 18, 27, 32, 41
_STATE = slice(46, 57)
_ORIGIN = slice(58, 64)
_SEPARATORS = (3, 12, 17, 26, 31, 40, 45, 57)
_EXPIRES_DIGITS = 7
_NOT_HEX = _hex.HEX_DIGITS
_DIGITS_AND_BLANK = b"0123456789 "
# Byte maps for translate(): 1 where the column holds a digit / something else than "0".
_IS_DIGIT = bytes(1 if chr(c).isdigit() and c < 128 else 0 for c in range(256))
_NOT_ZERO = bytes(0 if c == ord("0") else 1 for c in range(256))
_ORIGINS = {
    name.encode().ljust(_ORIGIN.stop - _ORIGIN.start): o for name, o in _conn_row.ORIGINS.items()
}
# Blocks of at least this many rows are counted by hash (numpy), smaller ones by Counter.
HASHED_MIN_ROWS = 2048
# Canonical row -> key, decoded by the last summary of a (layout, per_real_server).
_REMEMBERED: dict[tuple[ConnLayout, bool], dict[bytes, ConnCountKey]] = {}
# With per_real_server=False every key carries this destination: 0.0.0.0 port 0.
NO_DEST = ipaddress.IPv4Address(0)


class FixedKeys:
    """Counts fixed-layout blocks by key and decodes the counted rows once each."""

    def __init__(self, layout: ConnLayout, per_real_server: bool) -> None:
        self.layout = layout
        self.per_real_server = per_real_server
        self.expires_at = _ORIGIN.stop + 1 if layout.origin else _STATE.stop + 1
        self.row_bytes = self.expires_at + _EXPIRES_DIGITS + 1
        self.separators = _SEPARATORS + ((_ORIGIN.stop,) if layout.origin else ())
        # Hex columns left out of the key are checked here; those in it by `decode`, but
        # for the virtual address and port of a packed key (per service), here too.
        hex_columns = [*range(_CADDR, _CADDR + 8), *range(_CPORT, _CPORT + 4)]
        packed_runs = [(_VADDR, _VADDR + 8), (_VPORT, _VPORT + 4)]
        packed = [col for start, stop in packed_runs for col in range(start, stop)]
        if not per_real_server:
            hex_columns += [*range(_DADDR, _DADDR + 8), *range(_DPORT, _DPORT + 4)]
        self.hex_columns = (*hex_columns, *(packed if not per_real_server else ()))
        expires = range(self.expires_at, self.expires_at + _EXPIRES_DIGITS)
        self.blank = tuple(col for col in (*hex_columns, *expires) if col != _CPORT)
        self.rows: Counter[bytes] = Counter()
        self.last_rows = 0  # rows of the last block counted
        key_columns = [
            col
            for col in range(self.expires_at)
            if col not in self.blank and col not in self.separators
        ]
        self.hashed: HashedRows[ConnCountKey]
        if per_real_server:
            self.hashed = HashedRows(self.row_bytes, key_columns, self.blank, _CPORT)
        else:  # the key's hex columns are 48 bits: counted by exact packed keys
            texts = [col for col in key_columns if col not in packed and col != _CPORT]
            self.hashed = PackedRows(self.row_bytes, packed_runs, texts, self.blank, _CPORT)
        # Every counted row, decoded: filled as blocks bring new rows.
        self.keys: dict[bytes, ConnCountKey] = {}
        # The keys the last summary of this layout and granularity decoded (`remember`).
        self._previous = _REMEMBERED.get((layout, per_real_server), {})
        self._addresses: dict[bytes, IPAddress] = {}
        self._ports: dict[bytes, int] = {}
        self._names: dict[tuple[bytes, bytes], tuple[str, str]] = {}

    def count(self, block: bytes) -> bool:
        """Count a block of whole rows; False (nothing counted) unless every row fits."""
        size = self.row_bytes
        # Rows of `size` bytes, each ending in a newline (a newline anywhere else fails the
        # check of its column: every column is checked or decoded).
        n, rest = divmod(len(block), size)
        if n == 0 or rest or block[size - 1 :: size] != b"\n" * n:
            return False
        self.last_rows = n
        blanks = b" " * n
        if any(block[col::size] != blanks for col in self.separators):
            return False
        if any(block[col::size].translate(None, _NOT_HEX) for col in self.hex_columns):
            return False
        if not self._expires_ok(block):
            return False
        not_zero = 0
        for col in range(_CPORT, _CPORT + 4):
            not_zero |= int.from_bytes(block[col::size].translate(_NOT_ZERO), "big")
        if n >= HASHED_MIN_ROWS:
            counted = self.hashed.count(block, not_zero.to_bytes(n, "big"), self.key)
            if counted is not None:
                return counted
        rows = bytearray(block)
        rows[_CPORT::size] = not_zero.to_bytes(n, "big")
        nuls = bytes(n)
        for col in self.blank:
            rows[col::size] = nuls
        lines = bytes(rows).split(b"\n")
        lines.pop()  # after the last newline
        known = len(self.rows)
        self.rows.update(lines)
        if len(self.rows) == known:
            return True
        # New rows come last in the Counter (a dict keeps insertion order).
        new = list(islice(reversed(self.rows), len(self.rows) - known))
        try:
            for row in new:
                self.key(row)
        except ValueError:
            self.rows.subtract(lines)  # rare (malformed input): take the block back
            for row in new:
                del self.rows[row]
                self.keys.pop(row, None)
            return False
        return True

    def key(self, row: bytes) -> ConnCountKey:
        """`decode`, or the key the last summary decoded for this row (the same, as `decode`
        depends on the row alone); remembered in `keys`."""
        key = self._previous.get(row)
        if key is None:
            key = self.decode(row)
        self.keys[row] = key
        return key

    def remember(self) -> None:
        """Keep this summary's decoded rows for the next one (a scrape decodes only rows it
        has not seen the scrape before; what is kept is one table's distinct rows)."""
        _REMEMBERED[(self.layout, self.per_real_server)] = self.keys

    def counted(self) -> Iterator[tuple[ConnCountKey, int]]:
        """Every key counted so far with its count (a key may come more than once)."""
        for row, n in self.rows.items():
            yield self.keys[row], n
        yield from self.hashed.items()

    def _expires_ok(self, block: bytes) -> bool:
        """`%7u`: blanks then digits, the last column a digit (checked for all rows at once)."""
        size, first = self.row_bytes, self.expires_at
        last = block[first + _EXPIRES_DIGITS - 1 :: size]
        if not last.isdigit():
            return False
        digits_after = int.from_bytes(last.translate(_IS_DIGIT), "big")
        for col in range(first + _EXPIRES_DIGITS - 2, first - 1, -1):
            column = block[col::size]
            if column.translate(None, _DIGITS_AND_BLANK):
                return False
            digits = int.from_bytes(column.translate(_IS_DIGIT), "big")
            if digits | digits_after != digits_after:  # a digit before a blank
                return False
            digits_after = digits
        return True

    def decode(self, row: bytes) -> ConnCountKey:
        """The key of a counted row (template or not); ValueError if a field is malformed."""
        names = self._names.get((row[_PROTO], row[_STATE]))
        if names is None:
            protocol = row[_PROTO].rstrip(b" ").decode("latin-1")
            state = _conn_row.state(protocol, row[_STATE].rstrip(b" ").decode("latin-1"))
            names = self._names[(row[_PROTO], row[_STATE])] = (protocol, state)
        protocol, state = names
        to_ip = row[_VADDR : _VADDR + 8]
        vaddr: IPAddress | None
        if protocol == "IP":
            vaddr, fwmark = _conn_row.virtual(protocol, to_ip)
        else:
            vaddr, fwmark = self._address(to_ip), 0
        origin = None
        if self.layout.origin:
            origin = _ORIGINS.get(row[_ORIGIN])
            if origin is None:
                name = row[_ORIGIN].rstrip(b" ").decode("latin-1")
                raise ValueError(f"bad Origin {name!r} (expected LOCAL or SYNC)")
        zero_port = row[_CPORT] == 0
        template = is_template_entry(protocol, zero_port, state)
        dest: IPAddress = NO_DEST
        dest_port = 0
        if self.per_real_server:
            dest = self._address(row[_DADDR : _DADDR + 8])
            dest_port = self._port(row[_DPORT : _DPORT + 4])
        # Positional, in ConnCountKey's field order (keywords cost more, once per key).
        return ConnCountKey(
            protocol,
            vaddr,
            self._port(row[_VPORT : _VPORT + 4]),
            fwmark,
            dest,
            dest_port,
            state,
            template,
            origin,
        )

    def _port(self, tok: bytes) -> int:
        port = self._ports.get(tok)
        if port is None:
            port = self._ports[tok] = _hex.port(tok)
        return port

    def _address(self, tok: bytes) -> IPAddress:
        addr = self._addresses.get(tok)
        if addr is None:
            addr = self._addresses[tok] = _hex.ipv4_hex(tok)
        return addr
