"""The columnar strategy: the rows of a block that fit a fixed-width layout, checked and
converted column by column with numpy, nothing per row in Python.

A block of whole lines is cut into rows at its newlines. The rows as long as a layout of the
format (`_format.RowFormat.layouts`) become an (N, row_bytes) byte matrix (a view of the
block when every row has that length, the usual case) and every byte of every row is
checked against the values its layout allows there, in a few passes over the block;
padded spans must have their blanks on one side. The rows that fit are the layout's; the
rest (another width, PE data, anything malformed) are refused and read the exact way by
the caller, which therefore also raises every error. numpy is imported by big tables only
(the dispatchers' thresholds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lvsprobe.kernel.procfs._format import Layout, Span

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Bools = npt.NDArray[np.bool_]
    I64 = npt.NDArray[np.int64]
    U8 = npt.NDArray[np.uint8]
    U64 = npt.NDArray[np.uint64]

_NEWLINE, _BLANK, _MINUS, _ZERO = 10, 32, 45, 48


@dataclass(frozen=True)
class Taken:
    """The rows of a block one layout took: their indices in the block (ascending) and
    their bytes, newline included."""

    layout: Layout
    rows: I64
    matrix: U8


@dataclass(frozen=True)
class Split:
    """A block cut by the layouts: the rows taken, and the lines left to the exact reading
    (index in the block, line without its newline), in file order."""

    lines: int
    taken: list[Taken]
    refused: list[tuple[int, bytes]]


class Columns:
    """Cuts blocks by a format's layouts. Made per table read: it keeps each layout's checks
    repeated to the biggest block so far (six bytes per byte read)."""

    def __init__(self, layouts: Sequence[Layout]) -> None:
        self.layouts = list(layouts)
        self._checks: dict[int, _Checks] = {}

    def split(self, block: bytes) -> Split:
        """Rows of a block of whole lines (the last may lack its newline) by layout."""
        import numpy as np

        data = np.frombuffer(block, np.uint8)
        uniform = next(
            (
                layout
                for layout in self.layouts
                if len(block) % layout.row_bytes == 0
                and block[layout.row_bytes - 1 :: layout.row_bytes]
                == b"\n" * (len(block) // layout.row_bytes)
            ),
            None,
        )
        if uniform is not None:  # every row of one length, the usual block: a view
            matrix = data.reshape(-1, uniform.row_bytes)
            if self._check(uniform, matrix) is None:
                return Split(len(matrix), [Taken(uniform, np.arange(len(matrix)), matrix)], [])
        # Otherwise rows are cut at the newlines (a row refused above may hold one).
        ends = np.flatnonzero(data == _NEWLINE)
        if not block.endswith(b"\n"):
            ends = np.append(ends, len(block))
        starts = np.zeros(len(ends), np.int64)
        starts[1:] = ends[:-1] + 1
        free = np.ones(len(ends), bool)
        # A last row without its newline is left to the exact parser: the row windows below
        # are `row_bytes` long, newline included, and would reach past the block.
        whole = free.copy()
        whole[-1:] = block.endswith(b"\n")
        taken = []
        for layout in self.layouts:
            rows = np.flatnonzero(free & whole & (ends - starts + 1 == layout.row_bytes))
            if not len(rows):
                continue
            # Whole rows picked from a view of every window of that length (no index per byte).
            matrix = np.lib.stride_tricks.sliding_window_view(data, layout.row_bytes)[starts[rows]]
            ok = self._check(layout, matrix)
            if ok is not None:
                rows, matrix = rows[ok], matrix[ok]
            if len(rows):
                taken.append(Taken(layout, rows, matrix))
                free[rows] = False
        lines = [(at, block[starts[at] : ends[at]]) for at in np.flatnonzero(free).tolist()]
        return Split(len(starts), taken, lines)

    def _check(self, layout: Layout, matrix: U8) -> Bools | None:
        """Which rows have every byte allowed and their padded spans in order (None: all)."""
        import numpy as np

        n, size = matrix.shape
        checks = self._checks.get(layout.index)
        if checks is None or checks.rows < n:
            checks = self._checks[layout.index] = _Checks(layout, max(n, 1024))
        flat = matrix.reshape(-1)
        used = n * size
        bad = (flat - checks.low1[:used]) > checks.span1[:used]
        bad &= (flat - checks.low2[:used]) > checks.span2[:used]
        # A blank then a character in a left-aligned span, or the reverse in a right-aligned.
        blank = flat == _BLANK
        bad[1:] |= (blank[:-1] > blank[1:]) & checks.left[1:used]
        bad[1:] |= (blank[:-1] < blank[1:]) & checks.right[1:used]
        if not bad.any():
            return None
        ok: Bools = ~np.logical_or.reduce(bad.reshape(n, size), axis=1)
        return ok


class _Checks:
    """A layout's per-byte checks repeated for `rows` rows, as flat arrays: the low end and
    the span of each of the two allowed ranges, and where a blank may not precede a
    character (left-aligned) or follow one (right-aligned)."""

    def __init__(self, layout: Layout, rows: int) -> None:
        import numpy as np

        def tiled(values: list[int]) -> U8:
            return np.tile(np.array(values, np.uint8), rows)

        allowed = layout.allowed
        self.rows = rows
        self.low1 = tiled([first[0] for first, _ in allowed])
        self.span1 = tiled([first[1] - first[0] for first, _ in allowed])
        self.low2 = tiled([second[0] for _, second in allowed])
        self.span2 = tiled([second[1] - second[0] for _, second in allowed])
        left, right = [0] * layout.row_bytes, [0] * layout.row_bytes
        for spans, marks in ((layout.left_aligned, left), (layout.right_aligned, right)):
            for span in spans:
                marks[span.start + 1 : span.stop] = [1] * (span.width - 1)
        self.left = tiled(left).view(bool)
        self.right = tiled(right).view(bool)


def hex_values(matrix: U8, span: Span) -> I64:
    """The numbers an upper-case hex span (checked) spells, up to 15 digits."""
    import numpy as np

    digits = matrix[:, span.start : span.stop].astype(np.int64)
    digits -= _ZERO + 7 * (digits > ord("9"))
    values: I64 = digits @ (16 ** np.arange(span.width - 1, -1, -1, dtype=np.int64))
    return values


def all_zero(matrix: U8, span: Span) -> Bools:
    """Rows whose 4-byte span is `0000` (a port 0)."""
    import numpy as np

    assert span.width == 4
    words = np.ascontiguousarray(matrix[:, span.start : span.stop]).view("<u4").ravel()
    zero: Bools = words == int.from_bytes(b"0000", "little")
    return zero


def decimal_values(matrix: U8, span: Span, bounds: tuple[int, int]) -> tuple[I64, Bools]:
    """A checked `%-Nd`/`%Nu` span as numbers, and which rows hold one within `bounds`
    (a lone minus holds none)."""
    import numpy as np

    chars = matrix[:, span.start : span.stop]
    digit = chars != _BLANK
    negative = chars[:, 0] == _MINUS
    digit[:, 0] &= ~negative
    value = np.zeros(len(chars), np.int64)
    for col in range(span.width):
        value = np.where(
            digit[:, col], value * 10 + (chars[:, col].astype(np.int64) - _ZERO), value
        )
    value = np.where(negative, -value, value)
    low, high = bounds
    ok: Bools = digit.any(axis=1) & (value >= low) & (value <= high)
    return value, ok
