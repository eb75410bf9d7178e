"""What the http flow (flows.py) reads of an HTTP/1.1 response head, read as bytes: its
status and body framing, from its numbers and the values of the headers naming them, each as
a latin-1 text's `partition(":")` and `strip()` would read them
(tests/replay/test_flows_sansio.py checks it against that reading).
"""

from __future__ import annotations

from collections.abc import Sequence

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


def header_values(head: bytes, lowered: bytes, name: bytes, after: int) -> Sequence[bytes]:
    """The stripped values of the header lines named `name` (lower case) in `head` past the
    status line (which ends at `after`; -1: it is all there is), in order: only the lines
    holding `name` are split (a head without it costs one search)."""
    at = lowered.find(name, after) if after >= 0 else -1
    if at < 0:
        return ()
    values: list[bytes] = []
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


# A head's reading: (status, body bytes or -1 until EOF, chunked), or the text of a status
# line that is no valid one
Framing = tuple[int, int, bool] | str


def read_head(head: bytes) -> Framing:
    """The framing of a response head (its bytes up to the blank line): only the status line
    and the lines naming Content-Length or Transfer-Encoding are split."""
    first = head.find(b"\r\n")
    status_line = head if first < 0 else head[:first]
    parts = status_line.split(b" ", 2)
    status = http_number(parts[1]) if len(parts) >= 2 else None
    if status is None or not parts[0].startswith(b"HTTP/"):
        return status_line.decode("latin-1")[:80]
    want, chunked = -1, False
    if first >= 0:  # (a head of its status line alone names no header)
        lowered = head.lower()
        for value in header_values(head, lowered, b"content-length", first):
            if value.isdigit():
                length = http_number(value)
                want = NEVER_WHOLE if length is None else length
        for value in header_values(head, lowered, b"transfer-encoding", first):
            chunked = chunked or b"chunked" in value.lower()
    if status in (204, 304) or 100 <= status < 200:
        want = 0
    return status, want, chunked


class HeadReader:
    """`read_head`, remembering the last heads read: a run's replies come from a few servers
    and differ, if at all, in a Date line that changes once a second, so most heads are read
    once. Per run (the engines' flow context owns one), never more than LIMIT heads kept."""

    __slots__ = ("_read",)
    LIMIT = 64

    def __init__(self) -> None:
        self._read: dict[bytes, Framing] = {}

    def __call__(self, head: bytes) -> Framing:
        framing = self._read.get(head)
        if framing is None:
            if len(self._read) >= self.LIMIT:
                self._read.clear()
            framing = self._read[head] = read_head(head)
        return framing
