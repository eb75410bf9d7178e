"""IPv4 real-server lines of /proc/net/ip_vs taken column by column with numpy.

The kernel prints an IPv4 real server as `"  -> %08X:%04X      %-7s %-6d %-10d %-10d\\n"`:
60 characters whenever the weight has at most 6 digits and each count at most 10 (every
line a kube-proxy node shows). In a block of lines, those of that length are gathered into
an (N, 60) byte matrix and every column is checked at once: the fixed characters, hex
digits, one of the four forwarding names, and each number as `-?[0-9]+ *` within the int32
range the exact parser allows. A line that fails any check (or has another length: service
lines, IPv6, wide numbers) is left to the exact parser, which raises the ParseError when the
line is malformed. numpy is imported by big tables only (see `ip_vs.NUMPY_MIN_CHARS`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Bools = npt.NDArray[np.bool_]
    I64 = npt.NDArray[np.int64]
    U8 = npt.NDArray[np.uint8]

LINE_CHARS = 60
_FIXED = {0: " ", 1: " ", 2: "-", 3: ">", 4: " ", 13: ":", 31: " ", 38: " ", 49: " "}
_FIXED.update({col: " " for col in range(18, 24)})
_ADDRESS, _PORT = (5, 13), (14, 18)
_FORWARD = (24, 32)  # the %-7s name and the blank after it: 8 bytes, one uint64
# In ip_vs.py's _FORWARDS order of codes: Masq, Local, Tunnel, Route.
FORWARD_NAMES = ("Masq", "Local", "Tunnel", "Route")
# (first column, width, signed): weight (%-6d, never negative here), active, inactive.
_NUMBERS = ((32, 6, False), (39, 10, True), (50, 10, True))
_I32 = (-(1 << 31), (1 << 31) - 1)


class FixedRows(NamedTuple):
    """The lines of a block taken here (indices, ascending) and their six fields."""

    lines: int  # lines in the block
    taken: list[int]
    addresses: list[int]
    ports: list[int]
    forwards: list[int]  # index into FORWARD_NAMES
    weights: list[int]
    actives: list[int]
    inactives: list[int]


def take_fixed(block: str) -> FixedRows | None:
    """The usual IPv4 real-server lines of a block of whole lines (its last line may lack
    its newline); None when the block is not ASCII (character and byte offsets differ)."""
    import numpy as np

    if not block.isascii():
        return None
    data = np.frombuffer(block.encode("ascii"), np.uint8)
    ends = np.flatnonzero(data == 10)
    if not block.endswith("\n"):
        ends = np.append(ends, len(data))
    starts = np.zeros(len(ends), np.int64)
    starts[1:] = ends[:-1] + 1
    candidates = np.flatnonzero(ends - starts == LINE_CHARS)
    empty: list[int] = []
    if not len(candidates):
        return FixedRows(len(ends), empty, empty, empty, empty, empty, empty, empty)
    rows = data[starts[candidates, None] + np.arange(LINE_CHARS)]
    ok = (rows[:, list(_FIXED)] == np.frombuffer("".join(_FIXED.values()).encode(), np.uint8)).all(
        axis=1
    )
    address, ok_address = _hex_number(rows[:, slice(*_ADDRESS)])
    port, ok_port = _hex_number(rows[:, slice(*_PORT)])
    forward = _forward_code(rows[:, slice(*_FORWARD)])
    ok &= ok_address & ok_port & (forward >= 0)
    numbers = []
    for first, width, signed in _NUMBERS:
        value, ok_number = _decimal(rows[:, first : first + width], signed)
        ok &= ok_number
        numbers.append(value)
    return FixedRows(
        len(ends),
        candidates[ok].tolist(),
        address[ok].tolist(),
        port[ok].tolist(),
        forward[ok].tolist(),
        *(value[ok].tolist() for value in numbers),
    )


def _hex_number(chars: U8) -> tuple[I64, Bools]:
    """Upper-case hex digits (as %X prints them) to numbers; False where a byte is not one."""
    import numpy as np

    digit = (chars >= ord("0")) & (chars <= ord("9"))
    letter = (chars >= ord("A")) & (chars <= ord("F"))
    values = chars.astype(np.int64) - np.where(letter, ord("A") - 10, ord("0"))
    weights = 16 ** np.arange(chars.shape[1] - 1, -1, -1, dtype=np.int64)
    ok: Bools = np.logical_and.reduce(digit | letter, axis=1)
    return values @ weights, ok


def _forward_code(chars: U8) -> I64:
    """The FORWARD_NAMES index of each `%-7s ` name, -1 for anything else."""
    import numpy as np

    words = np.ascontiguousarray(chars).view(np.uint64).ravel()
    code = np.full(len(words), -1, np.int64)
    for index, name in enumerate(FORWARD_NAMES):
        word = np.frombuffer(f"{name:<7s} ".encode(), np.uint64)[0]
        code[words == word] = index
    return code


def _decimal(chars: U8, signed: bool) -> tuple[I64, Bools]:
    """`%-Nd` fields (digits, an optional leading minus when signed, then blanks) to
    numbers; False where the field is not that or the number is out of int32 range."""
    import numpy as np

    filled = chars != ord(" ")
    digit = (chars >= ord("0")) & (chars <= ord("9"))
    allowed = digit.copy()
    negative = np.zeros(len(chars), bool)
    if signed:
        negative = chars[:, 0] == ord("-")
        allowed[:, 0] |= negative
    # Characters first, blanks after; the characters digits (or the sign), one digit at least.
    ok = filled[:, 0] & (filled[:, 1:] <= filled[:, :-1]).all(axis=1)
    ok &= (allowed | ~filled).all(axis=1) & digit.any(axis=1)
    value = np.zeros(len(chars), np.int64)
    digits = chars.astype(np.int64) - ord("0")
    for col in range(chars.shape[1]):
        value = np.where(digit[:, col], value * 10 + digits[:, col], value)
    value = np.where(negative, -value, value)
    low, high = _I32
    ok &= (value >= (0 if not signed else low)) & (value <= high)
    return value, ok
