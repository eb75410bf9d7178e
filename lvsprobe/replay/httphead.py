"""The pieces of an HTTP/1.1 response head the http flow (flows.py) reads, read as bytes:
its numbers and the values of a named header, each as a latin-1 text's `partition(":")` and
`strip()` would read them (tests/replay/test_flows_sansio.py checks it against that reading).
"""

from __future__ import annotations

# What str.strip() strips from a header decoded as latin-1: ASCII whitespace, \x1c-\x1f,
# NEL (\x85) and NBSP (\xa0)
_LATIN1_SPACE = bytes(b for b in range(256) if chr(b).isspace())
# A status or Content-Length with more digits is no real one (and int() refuses more than
# 4300 digits): such a status line is a bad one, such a length never read whole
_MAX_DIGITS = 18
NEVER_WHOLE = 10**_MAX_DIGITS


def http_number(digits: bytes) -> int | None:
    """The value of an HTTP number: ASCII digits only (str.isdigit() also takes `²`, which
    int() refuses), at most _MAX_DIGITS of them; else None."""
    return int(digits) if digits.isdigit() and len(digits) <= _MAX_DIGITS else None


def header_values(head: bytes, lowered: bytes, name: bytes, after: int) -> list[bytes]:
    """The stripped values of the header lines named `name` (lower case) in `head` past the
    status line (which ends at `after`; -1: it is all there is), in order: only the lines
    holding `name` are split."""
    values: list[bytes] = []
    if after < 0:
        return values
    at = lowered.find(name, after)
    while at >= 0:
        start = lowered.rfind(b"\r\n", 0, at) + 2
        stop = lowered.find(b"\r\n", at)
        if stop < 0:
            stop = len(lowered)
        line_name, _, value = head[start:stop].partition(b":")
        if line_name.strip(_LATIN1_SPACE).lower() == name:
            values.append(value.strip(_LATIN1_SPACE))
        at = lowered.find(name, stop)
    return values
