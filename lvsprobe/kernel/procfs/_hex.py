"""Decoding of the hex and decimal fields the IPVS /proc files print (shared by every parser).

Every function takes one whitespace-separated token and returns a value or raises
`ValueError` with a reason; the parsers turn that into a `ParseError` naming file and line.
Tokens are validated with ASCII-only patterns before conversion, because `int(tok, 16)` would
also accept `0x…`, `_` separators and surrounding blanks, none of which the kernel prints.
"""

from __future__ import annotations

import ipaddress
import re

from lvsprobe.model import IPAddress

U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1

# `%08X` of a host-order IPv4 address; the kernel prints upper case, lower case is accepted.
_IPV4 = re.compile(r"[0-9A-Fa-f]{8}")
# `%pI6`: the full form, 8 groups of 4 hex digits (lower case from the kernel).
_IPV6 = re.compile(r"[0-9A-Fa-f]{4}(?::[0-9A-Fa-f]{4}){7}")
_PORT = re.compile(r"[0-9A-Fa-f]{4}")
_HEX = re.compile(r"[0-9A-Fa-f]+")
_DEC = re.compile(r"-?[0-9]+")


def _show(tok: str) -> str:
    return repr(tok if len(tok) <= 48 else tok[:45] + "...")


def ipv4_hex(tok: str) -> ipaddress.IPv4Address:
    """`C0A8010A` (`%08X` of ntohl(addr)) -> 192.168.1.10."""
    if not _IPV4.fullmatch(tok):
        raise ValueError(f"bad IPv4 address {_show(tok)} (expected 8 hex digits)")
    return ipaddress.IPv4Address(int(tok, 16))


def ipv6_full(tok: str) -> ipaddress.IPv6Address:
    """`2001:0db8:0000:…:0001` (`%pI6`, uncompressed) -> 2001:db8::1."""
    if not _IPV6.fullmatch(tok):
        raise ValueError(f"bad IPv6 address {_show(tok)} (expected 8 groups of 4 hex digits)")
    return ipaddress.IPv6Address(int(tok.replace(":", ""), 16))


def address(tok: str) -> IPAddress:
    """An address as /proc/net/ip_vs_conn prints it: `%08X` (IPv4) or bare `%pI6` (IPv6)."""
    return ipv6_full(tok) if ":" in tok else ipv4_hex(tok)


def port(tok: str) -> int:
    """`0050` (`%04X` of ntohs(port)) -> 80."""
    if not _PORT.fullmatch(tok):
        raise ValueError(f"bad port {_show(tok)} (expected 4 hex digits)")
    return int(tok, 16)


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


def hex_number(tok: str, limit: int = U64_MAX) -> int:
    """A `%LX`/`%X` counter (no `0x`, any width) that must fit in `limit`."""
    if not _HEX.fullmatch(tok):
        raise ValueError(f"bad hex number {_show(tok)}")
    if len(tok) > 32 or int(tok, 16) > limit:
        raise ValueError(f"hex number {_show(tok)} exceeds {limit.bit_length()} bits")
    return int(tok, 16)


def decimal(tok: str, low: int, high: int) -> int:
    """A `%d`/`%u` field that must lie in [low, high]."""
    if not _DEC.fullmatch(tok) or len(tok) > 40:
        raise ValueError(f"bad decimal number {_show(tok)}")
    value = int(tok)
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
