"""Decoding of the hex and decimal fields the IPVS /proc files print (shared by every parser).

Every function takes one whitespace-separated token (str from the text parsers, bytes from
the connection-table parser) and returns a value or raises `ValueError` with a reason; the
parsers turn that into a `ParseError` naming file and line. Tokens are checked for their
exact width and ASCII character class before conversion, because `int(tok, 16)` would also
accept `0x…`, `_` separators and surrounding blanks, none of which the kernel prints.
"""

from __future__ import annotations

import ipaddress

from lvsprobe.model import IPAddress

U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1

# The kernel prints IPv4/ports/counters upper case (`%X`) and IPv6 lower case (`%pI6`);
# both cases are accepted everywhere.
HEX_DIGITS = b"0123456789ABCDEFabcdef"
_DIGITS = b"0123456789"
_IPV6_COLONS = b":" * 7


def _b(tok: str | bytes) -> bytes:
    return tok.encode("latin-1", "replace") if isinstance(tok, str) else tok


def _show(tok: str | bytes) -> str:
    text = tok.decode("latin-1") if isinstance(tok, bytes) else tok
    return repr(text if len(text) <= 48 else text[:45] + "...")


def is_hex(tok: bytes, width: int) -> bool:
    """True when `tok` is exactly `width` hex digits."""
    return len(tok) == width and not tok.translate(None, HEX_DIGITS)


def ipv4_hex(tok: str | bytes) -> ipaddress.IPv4Address:
    """`C0A8010A` (`%08X` of ntohl(addr)) -> 192.168.1.10."""
    b = _b(tok)
    if not is_hex(b, 8):
        raise ValueError(f"bad IPv4 address {_show(tok)} (expected 8 hex digits)")
    return ipaddress.IPv4Address(int(b, 16))


def ipv6_full(tok: str | bytes) -> ipaddress.IPv6Address:
    """`2001:0db8:0000:…:0001` (`%pI6`, uncompressed) -> 2001:db8::1."""
    b = _b(tok)
    digits = b.replace(b":", b"")
    if len(b) != 39 or b[4::5] != _IPV6_COLONS or not is_hex(digits, 32):
        raise ValueError(f"bad IPv6 address {_show(tok)} (expected 8 groups of 4 hex digits)")
    return ipaddress.IPv6Address(int(digits, 16))


def address(tok: str | bytes) -> IPAddress:
    """An address as /proc/net/ip_vs_conn prints it: `%08X` (IPv4) or bare `%pI6` (IPv6)."""
    b = _b(tok)
    return ipv6_full(b) if b":" in b else ipv4_hex(b)


def port(tok: str | bytes) -> int:
    """`0050` (`%04X` of ntohs(port)) -> 80."""
    b = _b(tok)
    if not is_hex(b, 4):
        raise ValueError(f"bad port {_show(tok)} (expected 4 hex digits)")
    return int(b, 16)


def bracketed_endpoint(tok: str) -> tuple[IPAddress, int]:
    """`C0A8010A:0050` or `[2001:…:0001]:0050` (/proc/net/ip_vs) -> (address, port)."""
    if tok.startswith("["):
        addr, sep, port_tok = tok[1:].partition("]:")
        if not sep:
            raise ValueError(f"bad IPv6 endpoint {_show(tok)} (expected [address]:port)")
        return ipv6_full(addr), port(port_tok)
    addr, sep, port_tok = tok.partition(":")
    if not sep:
        raise ValueError(f"bad endpoint {_show(tok)} (expected address:port)")
    return ipv4_hex(addr), port(port_tok)


def hex_number(tok: str | bytes, limit: int = U64_MAX) -> int:
    """A `%LX`/`%X` counter (no `0x`, any width) that must fit in `limit`."""
    b = _b(tok)
    if not b or b.translate(None, HEX_DIGITS):
        raise ValueError(f"bad hex number {_show(tok)}")
    if len(b) > 32 or int(b, 16) > limit:
        raise ValueError(f"hex number {_show(tok)} exceeds {limit.bit_length()} bits")
    return int(b, 16)


def decimal(tok: str | bytes, low: int, high: int) -> int:
    """A `%d`/`%u` field that must lie in [low, high]."""
    b = _b(tok)
    digits = b[1:] if b.startswith(b"-") else b
    if not digits or digits.translate(None, _DIGITS) or len(digits) > 40:
        raise ValueError(f"bad decimal number {_show(tok)}")
    value = int(b)
    if not low <= value <= high:
        raise ValueError(f"number {_show(tok)} out of range [{low}, {high}]")
    return value


def split_lines(text: str) -> list[str]:
    """Lines of a /proc file split on "\\n" only (every kernel line ends in one).

    `str.splitlines` would also split on \\r, \\x0b, \\x85…, shifting line numbers of
    hostile input. A missing final newline (a truncated read) keeps its last line.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines
