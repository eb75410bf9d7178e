"""Addresses as the columnar table holds them, an int plus its family, to objects and text.

A table keeps no `ipaddress` object per real server: 10^5 of them cost ~0.1 s and ~6 MB a
scrape to make, and label text (what the exporter needs) comes faster from the int.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import cache
from socket import inet_ntoa
from typing import TYPE_CHECKING

from lvsprobe.model.values import Family, IPAddress

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    U8 = npt.NDArray[np.uint8]

# Below this many addresses, text is made one by one (numpy is not imported).
NUMPY_MIN_ADDRESSES = 4096


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
    """Addresses as ipvsadm -n prints them (dotted quads, compressed IPv6); many IPv4 ones
    by numpy.

    `str()` of an address runs Python code and socket.inet_ntoa costs ~0.5 µs a call: for
    10^5 real servers that is a tenth of a scrape. numpy writes every quad into one buffer,
    split into strings in C.
    """
    if len(numbers) < NUMPY_MIN_ADDRESSES or Family.INET6 in families:
        return list(map(address_text, families, numbers))
    import numpy as np

    values = np.fromiter(numbers, np.uint32, len(numbers))
    # Per row: four octets of 3 characters (NUL-padded) with "." after the first three and a
    # newline after the last; the NULs then go, and the newlines split the rows.
    chars = np.zeros((len(numbers), 16), np.uint8)
    for index, shift in enumerate((24, 16, 8, 0)):
        chars[:, 4 * index : 4 * index + 3] = _octet_chars()[(values >> shift) & 0xFF]
        chars[:, 4 * index + 3] = ord(".") if index < 3 else ord("\n")
    text = chars.tobytes().replace(b"\0", b"").decode("ascii")
    return text.split("\n")[:-1]


def address_text(family: Family, number: int) -> str:
    """One address as text."""
    if family is Family.INET:
        return inet_ntoa(number.to_bytes(4))
    return str(ipaddress.IPv6Address(number))


@cache
def _octet_chars() -> U8:
    """The decimal digits of 0..255, left-aligned in 3 bytes, NUL-padded."""
    import numpy as np

    table = np.zeros((256, 3), np.uint8)
    for octet in range(256):
        digits = str(octet).encode()
        table[octet, : len(digits)] = np.frombuffer(digits, np.uint8)
    return table
