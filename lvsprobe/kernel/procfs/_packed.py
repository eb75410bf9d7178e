"""Keys of fixed-width rows packed exactly into uint64 words, and counted by them.

The columnar strategy of the connection table counts rows by a key (protocol, service,
state, ...) without a Python object per row: each row's key spans are packed into one or a
few uint64 words (`Packer`: a hex span is its number, a `%s` span the index of its name in
the column's names), and the words are counted with sorts (`KeyTable`). Each distinct key
is unpacked back into the tokens it was printed as once, when it first shows, and decoded
by the caller (the exact parser); the table of decoded keys is what a `ParseCache` keeps
for the next read.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING

from lvsprobe.kernel.procfs._format import Layout, Span

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Bools = npt.NDArray[np.bool_]
    I64 = npt.NDArray[np.int64]
    U8 = npt.NDArray[np.uint8]
    U64 = npt.NDArray[np.uint64]
    Words = npt.NDArray[np.uint64]  # (rows, words)


def window(matrix: U8, start: int, width: int) -> U64:
    """Bytes start..start+width (at most 8) of every row as one little-endian number (the
    first byte lowest), read in place: an unaligned strided view, no copy of the rows."""
    import numpy as np

    rows, size = matrix.shape
    at = min(start, size - 8)
    if not matrix.flags.c_contiguous:
        matrix = np.ascontiguousarray(matrix)
    words = np.ndarray((rows,), "<u8", matrix, at, (size,))
    shifted: U64 = words >> np.uint64(8 * (start - at)) if start > at else words
    if width < 8:
        shifted = shifted & np.uint64((1 << 8 * width) - 1)
    return shifted


def hex_number(word: U64, digits: int) -> U64:
    """The number the first `digits` (4 or 8) checked hex digits of each word spell, most
    significant first. SWAR: a digit's value is its low nibble, plus 9 for a letter."""
    import numpy as np

    u64 = np.uint64
    value = (word & u64(0x0F0F0F0F0F0F0F0F)) + ((word >> u64(6)) & u64(0x0101010101010101)) * u64(9)
    # Adjacent digits into bytes (the first the high nibble), then bytes into 16-bit halves.
    pairs = (value & u64(0x000F000F000F000F)) << u64(4) | (value >> u64(8)) & u64(
        0x000F000F000F000F
    )
    quads = (pairs & u64(0x000000FF000000FF)) << u64(8) | (pairs >> u64(16)) & u64(
        0x000000FF000000FF
    )
    if digits == 4:
        return quads & u64(0xFFFF)
    return (quads & u64(0xFFFF)) << u64(16) | (quads >> u64(32)) & u64(0xFFFF)


class NameCodes:
    """The index in `names` of a padded name, found by a perfect hash of its bytes (two
    words) and checked against the name's own bytes: -1 for any other text."""

    _MULTIPLIERS = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0xD6E8FEB86659FD93)

    def __init__(self, names: Sequence[str], width: int) -> None:
        import numpy as np

        self.width = width
        padded = [name.ljust(width).encode("ascii") for name in names if len(name) <= width]
        self.names = [name.decode("ascii") for name in padded]
        low = [int.from_bytes(name[:8], "little") for name in padded]
        high = [int.from_bytes(name[8:16], "little") for name in padded]
        # Bits of a name's index (what a key packs), and of the hash table's slots: the
        # first size and multiplier that give every name a slot of its own.
        self.code_bits = max(1, len(padded).bit_length())
        self.bits, self.multiplier, slots = self._perfect(low, high)
        self.table = np.full(1 << self.bits, -1, np.int64)
        self.table[slots] = np.arange(len(slots))
        self.low = np.array(low or [0], np.uint64)
        self.high = np.array(high or [0], np.uint64)

    def _perfect(self, low: list[int], high: list[int]) -> tuple[int, int, list[int]]:
        for bits in range(max(1, (2 * len(low)).bit_length()), 21):
            for mul in self._MULTIPLIERS:
                self.bits = bits
                slots = [
                    self._slot(lo ^ hi * mul & (1 << 64) - 1)
                    for lo, hi in zip(low, high, strict=True)
                ]
                if len(set(slots)) == len(slots):
                    return bits, mul, slots
        raise ValueError("no perfect hash for these names")

    def _slot(self, mixed: int) -> int:
        return (mixed * 0x2545F4914F6CDD1D & (1 << 64) - 1) >> (64 - self.bits)

    def codes(self, matrix: U8, span: Span) -> I64:
        import numpy as np

        low = window(matrix, span.start, min(span.width, 8))
        high = (
            window(matrix, span.start + 8, span.width - 8) if span.width > 8 else np.zeros_like(low)
        )
        mixed = low ^ high * np.uint64(self.multiplier)
        code = self.table[(mixed * np.uint64(0x2545F4914F6CDD1D)) >> np.uint64(64 - self.bits)]
        known = code >= 0
        found = np.where(known, code, 0)
        same = (self.low[found] == low) & (self.high[found] == high)
        code[~same] = -1
        return code


class Packer:
    """A layout's key spans packed exactly into uint64 words per row, and back into tokens.

    Hex spans (`%08X`, `%04X`) are their numbers, `%pI6` its 128 bits, a `%s` span the
    index of its name (`NameCodes`, from the column's names); `flags` are extra bits the
    caller gives per row (the layout, a template bit). Rows whose text is no known name
    are not packed (`ok` False): the exact parser reads them.
    """

    def __init__(
        self, layout: Layout, spans: Sequence[Span], names: dict[str, tuple[str, ...]]
    ) -> None:
        self.layout = layout
        self.spans = list(spans)
        self.codes = {
            span.column: NameCodes(names[span.column], span.width)
            for span in spans
            if span.spec.endswith("s")
        }
        # (bits) of each packed item, in order: a hex span, an IPv6 half, a name code.
        self.items: list[int] = []
        for span in self.spans:
            if span.spec == "%pI6":
                self.items += [64, 64]
            elif span.column in self.codes:
                self.items.append(self.codes[span.column].code_bits)
            else:
                self.items.append(4 * span.width)

    def pack(self, matrix: U8, flags: U64, flag_bits: int) -> tuple[npt.NDArray[np.uint64], Bools]:
        """(rows, words) of packed keys, and which rows could be packed."""
        import numpy as np

        values: list[U64] = []
        ok = np.ones(len(matrix), bool)
        for span in self.spans:
            if span.spec == "%pI6":
                groups = [hex_number(window(matrix, span.start + 5 * g, 4), 4) for g in range(8)]
                for half in (groups[:4], groups[4:]):
                    word = np.zeros(len(matrix), np.uint64)
                    for group in half:
                        word = word << np.uint64(16) | group
                    values.append(word)
            elif span.column in self.codes:
                code = self.codes[span.column].codes(matrix, span)
                ok &= code >= 0
                values.append(np.maximum(code, 0).astype(np.uint64))
            else:
                values.append(hex_number(window(matrix, span.start, span.width), span.width))
        words: list[U64] = []
        used = 64
        for value, bits in [*zip(values, self.items, strict=True), (flags, flag_bits)]:
            if used + bits > 64:
                words.append(np.zeros(len(matrix), np.uint64))
                used = 0
            words[-1] = words[-1] << np.uint64(bits) | value if bits < 64 else value
            used += bits
        return np.stack(words, axis=1), ok

    def unpack(self, words: Sequence[int], flag_bits: int) -> tuple[dict[str, bytes], int]:
        """The tokens a packed key's spans held (hex upper case, IPv6 lower, names bare) and
        its flags."""
        fields: list[int] = []
        at = 0
        used = 64
        layout: list[list[int]] = []
        for bits in [*self.items, flag_bits]:
            if used + bits > 64:
                layout.append([])
                used = 0
            layout[-1].append(bits)
            used += bits
        for word, sizes in zip(words, layout, strict=True):
            shift = sum(sizes)
            for bits in sizes:
                shift -= bits
                fields.append(word >> shift & (1 << bits) - 1)
        tokens: dict[str, bytes] = {}
        for span in self.spans:
            if span.spec == "%pI6":
                value = fields[at] << 64 | fields[at + 1]
                at += 2
                hex32 = f"{value:032x}"
                tokens[span.column] = ":".join(hex32[g : g + 4] for g in range(0, 32, 4)).encode()
                continue
            value = fields[at]
            at += 1
            if span.column in self.codes:
                tokens[span.column] = self.codes[span.column].names[value].rstrip().encode()
            else:
                tokens[span.column] = f"{value:0{span.width}X}".encode()
        return tokens, fields[at]


_MIX = 0x9E3779B97F4A7C15


def fingerprints(words: Words) -> U64:
    """One uint64 per row: the word itself, or a mix of several (checked where it matters)."""
    import numpy as np

    if words.shape[1] == 1:
        one: U64 = words[:, 0]
        return one
    mixed = words[:, 0].copy()
    for column in range(1, words.shape[1]):
        mixed *= np.uint64(_MIX)
        mixed ^= words[:, column]
    mixed ^= mixed >> np.uint64(29)
    mixed *= np.uint64(0xBF58476D1CE4E5B9)
    mixed ^= mixed >> np.uint64(32)
    return mixed


class KeyTable:
    """Packed keys of one width, each with its decoded key and its rows in this read.

    Sorted by fingerprint (`prints`, with `slots` into the per-key arrays), so that a block's
    distinct keys are looked up with one `searchsorted`; only keys never seen are unpacked
    and decoded. A fingerprint that two keys share (of several words) is seen, never
    miscounted: `add` then refuses the block. `kept` is the table of this read's keys, for
    the next read.
    """

    def __init__(self, width: int) -> None:
        import numpy as np

        self.width = width
        self.prints = np.zeros(0, np.uint64)
        self.slots = np.zeros(0, np.int64)
        self.words = np.zeros((0, width), np.uint64)
        self.keys: list[Hashable] = []
        self.counts = np.zeros(0, np.int64)

    def fresh(self) -> KeyTable:
        """This table's keys with no rows counted (a new read starts from them)."""
        import numpy as np

        table = KeyTable(self.width)
        table.prints, table.slots, table.words, table.keys = (
            self.prints,
            self.slots,
            self.words,
            self.keys,
        )
        table.counts = np.zeros(len(self.keys), np.int64)
        return table

    def add(self, words: Words, decode: Callable[[tuple[int, ...]], Hashable]) -> bool:
        """Count rows of packed keys; False (nothing counted) when two keys share a
        fingerprint. `decode` may raise ValueError (then nothing is counted either)."""
        import numpy as np

        prints = fingerprints(words)
        distinct, first, inverse, counts = np.unique(
            prints, return_index=True, return_inverse=True, return_counts=True
        )
        shown = words[first]
        if not (words == shown[inverse]).all():
            return False
        at = np.searchsorted(self.prints, distinct)
        known = np.zeros(len(distinct), bool)
        if len(self.prints):
            near = np.minimum(at, len(self.prints) - 1)
            known = self.prints[near] == distinct
            slots = self.slots[near]
            if not (self.words[slots[known]] == shown[known]).all():
                return False
        new = ~known
        keys = [decode(tuple(row)) for row in shown[new].tolist()]
        if known.any():
            np.add.at(self.counts, slots[known], counts[known])
        if keys:
            start = len(self.keys)
            fresh = np.arange(start, start + len(keys), dtype=np.int64)
            self.prints = np.insert(self.prints, at[new], distinct[new])
            self.slots = np.insert(self.slots, at[new], fresh)
            self.words = np.concatenate([self.words, shown[new]])
            self.counts = np.concatenate([self.counts, counts[new]])
            self.keys = [*self.keys, *keys]
        return True

    def counted(self) -> tuple[list[Hashable], list[int]]:
        """The keys counted in this read, and their rows."""
        import numpy as np

        seen = np.flatnonzero(self.counts)
        if len(seen) == len(self.keys):
            return self.keys, self.counts.tolist()
        return list(map(self.keys.__getitem__, seen.tolist())), self.counts[seen].tolist()

    def kept(self) -> KeyTable:
        """A table of only the keys counted in this read (what a cache keeps)."""
        import numpy as np

        if self.counts.all():  # the usual scrape: the same keys as the last
            return self.fresh()
        used = self.counts[self.slots] > 0
        order = self.slots[used]
        table = KeyTable(self.width)
        table.prints = self.prints[used]
        table.slots = np.arange(len(order), dtype=np.int64)
        table.words = self.words[order]
        table.keys = [self.keys[slot] for slot in order.tolist()]
        table.counts = np.zeros(len(order), np.int64)
        return table
