"""Addresses as the columnar table holds them, an int plus its family, to objects and text.

A table keeps no `ipaddress` object per real server: 10^5 of them cost ~0.1 s and ~6 MB a
scrape to make, and label text (what the exporter needs) comes faster from the int.
"""

from __future__ import annotations

import ipaddress
import sys
from array import array
from collections.abc import Sequence
from socket import inet_ntoa

from lvsprobe.model.values import Family, IPAddress

_LITTLE = sys.byteorder == "little"


def address_number(address: IPAddress) -> tuple[Family, int]:
    """(family, int) of an address object: what a table stores."""
    return (Family.INET if address.version == 4 else Family.INET6), int(address)


def address_object(family: Family, number: int) -> IPAddress:
    """The `ipaddress` object of a table's (family, int)."""
    if family is Family.INET:
        return ipaddress.IPv4Address(number)
    return ipaddress.IPv6Address(number)


def address_objects(families: Sequence[Family], numbers: Sequence[int]) -> list[IPAddress]:
    """An object per row; rows of the same address share one (a backend of several
    services repeats, and the objects are the slow part)."""
    made: dict[tuple[Family, int], IPAddress] = {}
    out = []
    for key in zip(families, numbers, strict=True):
        address = made.get(key)
        if address is None:
            address = made[key] = address_object(*key)
        out.append(address)
    return out


def address_texts(families: Sequence[Family], numbers: Sequence[int]) -> list[str]:
    """Addresses as ipvsadm -n prints them (dotted quads, compressed IPv6); IPv4 ones in
    bulk.

    `str()` of an address runs Python code and socket.inet_ntoa costs ~0.5 µs a call: for
    10^5 real servers that is a tenth of a scrape. In bulk, each octet's three digit places
    are looked up for every address at once (`bytes.translate`) and written into one buffer
    of 16 bytes an address, split into strings in C.
    """
    if Family.INET6 in families:
        return list(map(address_text, families, numbers))
    rows = len(numbers)
    packed = array("Q", numbers).tobytes()  # a copy in C when already an array of u64
    # Per row: four octets of 3 characters (NUL-padded) with "." after the first three and a
    # newline after the last; the NULs then go, and the newlines split the rows.
    chars = bytearray(16 * rows)
    for index in range(4):
        significance = 3 - index
        octets = packed[(significance if _LITTLE else 7 - significance) :: 8]
        for place, digits in enumerate(_DIGIT_PLACES):
            chars[4 * index + place :: 16] = octets.translate(digits)
        chars[4 * index + 3 :: 16] = (b"." if index < 3 else b"\n") * rows
    return chars.replace(b"\0", b"").decode("ascii").split("\n")[:-1]


def address_text(family: Family, number: int) -> str:
    """One address as text."""
    if family is Family.INET:
        return inet_ntoa(number.to_bytes(4))
    return str(ipaddress.IPv6Address(number))


# The decimal digits of 0..255 left-aligned in 3 places, NUL-padded: per place, a
# `bytes.translate` table from an octet to its digit there.
_DIGIT_PLACES = tuple(
    bytes(ord(str(octet).ljust(3, "\0")[place]) for octet in range(256)) for place in range(3)
)
