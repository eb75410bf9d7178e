"""Counting big fixed-layout blocks of /proc/net/ip_vs_conn rows with numpy, exactly.

`_conn_fixed` checks a block column by column; its key is then a handful of fixed columns
of each row (protocol, virtual address and port, [real server], state, [Origin], whether the
client port is 0000). Here those columns are copied into an (N, 8W) byte matrix, seen as W
uint64 words per row and mixed into one uint64 hash per row (wrapping multiplies and
xor-shifts, nothing per row in Python). The rows are sorted by hash; neighbours with the
same hash must have the same words, so a hash collision is seen, never miscounted. Distinct
keys are kept across blocks in a sorted hash table (their words too, checked again on every
hit); only a key never seen before costs Python work: its canonical row (the bytes
`_conn_fixed` counts, non-key columns NUL'ed) is made once and decoded once.

A collision (two keys, one hash) answers None: the caller counts that block the plain way
(`collections.Counter`). numpy is imported on first use, by big blocks only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    U64 = npt.NDArray[np.uint64]
    I64 = npt.NDArray[np.int64]
    U8 = npt.NDArray[np.uint8]
    Bools = npt.NDArray[np.bool_]

K = TypeVar("K")
# Odd 64-bit constants (splitmix64's) for the row hash.
_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


def key_runs(columns: list[int]) -> list[tuple[int, int]]:
    """Sorted column numbers as [start, stop) runs of adjacent columns."""
    runs: list[tuple[int, int]] = []
    for col in columns:
        if runs and runs[-1][1] == col:
            runs[-1] = (runs[-1][0], col + 1)
        else:
            runs.append((col, col + 1))
    return runs


def row_hashes(words: U64) -> U64:
    """One uint64 per row of an (N, W) word matrix (wrapping arithmetic)."""
    import numpy as np

    mul, mix1, mix2 = (np.uint64(m) for m in _MIX)
    h = words[:, 0] * mul
    for j in range(1, words.shape[1]):
        h ^= words[:, j]
        h *= mul
    h ^= h >> np.uint64(31)
    h *= mix1
    h ^= h >> np.uint64(29)
    h *= mix2
    h ^= h >> np.uint64(32)
    return h


class HashedRows(Generic[K]):
    """Counts of canonical rows, keyed by hash across blocks (see the module docstring).

    `blank` are the columns NUL'ed in a canonical row, `flag` the column that holds the
    client-port-is-not-0000 byte (computed by the caller), `key_columns` the columns that
    tell keys apart (the flag column included). `count` is given `decode`, the key of a
    canonical row (ValueError if malformed): held by the caller, not here, so that the
    caller and this table make no reference cycle (a scrape runs with the cyclic GC paused).
    """

    def __init__(
        self,
        row_bytes: int,
        key_columns: list[int],
        blank: tuple[int, ...],
        flag: int,
    ) -> None:
        self.row_bytes = row_bytes
        self.runs = key_runs(key_columns)
        self.width = -(-len(key_columns) // 8) * 8  # padded to whole uint64 words
        self.blank = list(blank)
        self.flag = flag
        self.keys: list[K] = []  # slot -> decoded key
        self._counts: I64 | None = None  # slot -> count (capacity grows by doubling)
        self._words: U64 | None = None  # slot -> key words
        self._hashes: U64 | None = None  # sorted
        self._slots: I64 | None = None  # slot of each sorted hash

    def count(self, block: bytes, not_zero: bytes, decode: Callable[[bytes], K]) -> bool | None:
        """Count a checked block of `len(not_zero)` whole rows (`not_zero`: one byte per
        row, 1 unless the client port is 0000). False (nothing counted) if a new row does not
        decode, None (nothing counted) on a hash collision."""
        import numpy as np

        n = len(not_zero)
        table = np.frombuffer(block, np.uint8).reshape(n, self.row_bytes)
        flags = np.frombuffer(not_zero, np.uint8)
        keys = np.zeros((n, self.width), np.uint8)
        at = 0
        for start, stop in self.runs:
            if start <= self.flag < stop:
                keys[:, at : at + self.flag - start] = table[:, start : self.flag]
                keys[:, at + self.flag - start] = flags
                keys[:, at + self.flag - start + 1 : at + stop - start] = table[
                    :, self.flag + 1 : stop
                ]
            else:
                keys[:, at : at + stop - start] = table[:, start:stop]
            at += stop - start
        words = keys.view(np.uint64)
        hashes = self.hash(words)
        order = np.argsort(hashes)
        hashes = hashes[order]
        words = words[order]
        first = np.empty(n, bool)
        first[0] = True
        np.not_equal(hashes[1:], hashes[:-1], out=first[1:])
        if not (first[1:] | (words[1:] == words[:-1]).all(axis=1)).all():
            return None  # two keys share a hash
        starts = np.flatnonzero(first)
        counts = np.diff(np.append(starts, n))
        picked = (hashes[starts], words[starts], counts, order[starts])
        return self._add(*picked, table, flags, decode)

    def hash(self, words: U64) -> U64:
        """The hash of each row (a method so that tests can force collisions)."""
        return row_hashes(words)

    def _add(
        self,
        hashes: U64,
        words: U64,
        counts: I64,
        at: I64,
        table: U8,
        flags: U8,
        decode: Callable[[bytes], K],
    ) -> bool | None:
        """Add a block's distinct keys (sorted by hash) to the table, all or nothing."""
        import numpy as np

        if self._hashes is None or self._slots is None:
            found = np.zeros(len(hashes), bool)
            where = np.zeros(len(hashes), np.intp)
        else:
            where = np.searchsorted(self._hashes, hashes)
            found = self._hashes[np.minimum(where, len(self._hashes) - 1)] == hashes
        if found.any():
            assert self._slots is not None and self._words is not None
            slots = self._slots[where[found]]
            if not (self._words[slots] == words[found]).all():
                return None  # a key of this block shares a hash with an older one
        fresh = ~found
        rows = self._canonical(table[at[fresh]], flags[at[fresh]])
        try:
            keys = list(map(decode, rows))
        except ValueError:
            return False
        if found.any():
            assert self._counts is not None
            self._counts[slots] += counts[found]
        if keys:
            self._insert(hashes[fresh], words[fresh], counts[fresh], where[fresh], keys)
        return True

    def _canonical(self, picked: U8, flags: U8) -> list[bytes]:
        """The canonical rows (as `_conn_fixed` counts them, no newline) of whole rows."""
        picked = picked[:, : self.row_bytes - 1].copy()
        picked[:, self.blank] = 0
        picked[:, self.flag] = flags
        size = self.row_bytes - 1
        data = picked.tobytes()
        return [data[at : at + size] for at in range(0, len(data), size)]

    def _insert(self, hashes: U64, words: U64, counts: I64, where: I64, keys: list[K]) -> None:
        import numpy as np

        old, new = len(self.keys), len(self.keys) + len(keys)
        slots = np.arange(old, new, dtype=np.int64)
        if self._counts is None or self._words is None or new > len(self._counts):
            capacity = max(new, 2 * old, 1024)
            counts_grown = np.zeros(capacity, np.int64)
            words_grown = np.zeros((capacity, words.shape[1]), np.uint64)
            if self._counts is not None and self._words is not None:
                counts_grown[:old] = self._counts[:old]
                words_grown[:old] = self._words[:old]
            self._counts, self._words = counts_grown, words_grown
        self._counts[old:new] = counts
        self._words[old:new] = words
        self.keys.extend(keys)
        if self._hashes is None or self._slots is None:
            self._hashes, self._slots = hashes.copy(), slots
        else:
            self._hashes = np.insert(self._hashes, where, hashes)
            self._slots = np.insert(self._slots, where, slots)

    def items(self) -> Iterator[tuple[K, int]]:
        """Every key counted so far, with its count."""
        if self._counts is not None:
            yield from zip(self.keys, self._counts[: len(self.keys)].tolist(), strict=True)


class PackedRows(HashedRows[K]):
    """Counts of canonical rows keyed by an exact uint64, when the key's hex columns hold
    at most 48 bits (counting per service: virtual address and port).

    Each row's key columns are read as a few unaligned 8-byte words straight from the
    block (no copy of columns). The hex runs (checked hex digits by the caller) become
    their number, and the text columns (protocol, state, Origin: a handful of distinct
    values in a table) a code, the index of their words in a small table of the values
    seen (found by hash, the words checked). A row's key is then `number << 16 | code << 1
    | flag`: exact, so rows are counted by one `np.unique` (a sort, no argsort) and no
    words need checking. A collision of two text values, or more than 2^15 of them,
    answers None, as in HashedRows.
    """

    def __init__(
        self,
        row_bytes: int,
        hex_runs: list[tuple[int, int]],
        text_columns: list[int],
        blank: tuple[int, ...],
        flag: int,
    ) -> None:
        if any(stop - start not in (4, 8) for start, stop in hex_runs):
            raise ValueError("hex runs are of 4 or 8 digits")
        if sum(4 * (stop - start) for start, stop in hex_runs) > 48:
            raise ValueError("more than 48 bits of hex digits")
        hex_columns = [col for start, stop in hex_runs for col in range(start, stop)]
        super().__init__(row_bytes, sorted({*hex_columns, *text_columns, flag}), blank, flag)
        self.hex_runs = hex_runs
        self.text_words = _windows(text_columns, row_bytes)
        self._texts: U64 | None = None  # code -> text words
        self._text_hashes: U64 | None = None  # sorted
        self._text_codes: I64 | None = None  # code of each sorted hash

    def count(self, block: bytes, not_zero: bytes, decode: Callable[[bytes], K]) -> bool | None:
        import numpy as np

        n = len(not_zero)
        number = np.zeros(n, np.uint64)
        for start, stop in self.hex_runs:
            number <<= np.uint64(4 * (stop - start))
            number |= _hex_number(_word(block, n, self.row_bytes, start), stop - start)
        code = self._codes(block, n)
        if code is None:
            return None
        flags = np.frombuffer(not_zero, np.uint8)
        packed = number << np.uint64(16) | code << np.uint64(1) | flags
        values, counts = np.unique(packed, return_counts=True)
        at = np.zeros(len(values), np.intp)
        if self._hashes is not None:
            fresh = np.flatnonzero(~_found(self._hashes, values))
        else:
            fresh = np.arange(len(values))
        if len(fresh):
            # The first row of each new value, found among the rows that have one.
            rows = np.flatnonzero(_found(values[fresh], packed))
            _, first = np.unique(packed[rows], return_index=True)
            at[fresh] = rows[first]
        table = np.frombuffer(block, np.uint8).reshape(n, self.row_bytes)
        return self._add(values, values[:, None], counts, at, table, flags, decode)

    def _codes(self, block: bytes, n: int) -> U64 | None:
        """The code of each row's text columns (see the class docstring); None on a hash
        collision or too many distinct values."""
        import numpy as np

        words = np.empty((n, len(self.text_words)), np.uint64)
        for index, (start, mask) in enumerate(self.text_words):
            np.bitwise_and(_word(block, n, self.row_bytes, start), np.uint64(mask), words[:, index])
        hashes = self.hash(words)
        if self._text_hashes is None or not _found(self._text_hashes, hashes).all():
            self._learn(hashes, words)
        assert self._text_hashes is not None and self._text_codes is not None
        assert self._texts is not None
        if len(self._texts) > 1 << 15:
            return None
        code = self._text_codes[np.searchsorted(self._text_hashes, hashes)]
        if not (self._texts[code] == words).all():
            return None  # two text values share a hash
        return code.astype(np.uint64)

    def _learn(self, hashes: U64, words: U64) -> None:
        """Add the text values of rows whose hash is new (codes in order of learning)."""
        import numpy as np

        if self._text_hashes is None:
            rows = np.arange(len(hashes))
        else:
            rows = np.flatnonzero(~_found(self._text_hashes, hashes))
        # With return_index: a plain np.unique (np.isin too) imports numpy.ma (~MBs).
        values, first = np.unique(hashes[rows], return_index=True)
        old = 0 if self._texts is None else len(self._texts)
        added = words[rows[first]]
        self._texts = added if self._texts is None else np.concatenate([self._texts, added])
        all_hashes = values if self._text_hashes is None else np.append(self._text_hashes, values)
        all_codes = np.arange(old, old + len(values))
        if self._text_codes is not None:
            all_codes = np.append(self._text_codes, all_codes)
        order = np.argsort(all_hashes)
        self._text_hashes, self._text_codes = all_hashes[order], all_codes[order]


def _found(table: U64, values: U64) -> Bools:
    """Whether each value is in a sorted table (np.isin sorts both and imports numpy.ma)."""
    import numpy as np

    at = np.minimum(np.searchsorted(table, values), len(table) - 1)
    found: Bools = table[at] == values
    return found


def _windows(columns: list[int], row_bytes: int) -> list[tuple[int, int]]:
    """8-byte windows (start, mask of the bytes that are `columns`) covering `columns`,
    each within the row (so the last row's word stays in the block)."""
    windows = []
    left = sorted(columns)
    while left:
        start = min(left[0], row_bytes - 8)
        mask = sum(0xFF << 8 * (col - start) for col in left if col < start + 8)
        windows.append((start, mask))
        left = [col for col in left if col >= start + 8]
    return windows


def _word(block: bytes, rows: int, row_bytes: int, start: int) -> U64:
    """Bytes start..start+7 of every row as a little-endian uint64 (a strided, unaligned
    view of the block: no copy)."""
    import numpy as np

    return np.ndarray((rows,), "<u8", block, start, (row_bytes,))


def _hex_number(word: U64, digits: int) -> U64:
    """The number that the first `digits` (4 or 8) hex digits of each word spell, most
    significant first; the digits are checked already. SWAR: a digit's value is its low
    nibble, plus 9 for a letter (bit 6 set)."""
    import numpy as np

    u64 = np.uint64
    if digits == 4:
        word = word & u64(0xFFFFFFFF)
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
