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
