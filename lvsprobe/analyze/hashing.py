"""Exact models of the hashing schedulers sh, dh and mh (ip_vs_sh.c, ip_vs_dh.c, ip_vs_mh.c).

Pure. Tables are lists of dest indices in the kernel's list order (None = empty bucket). The
hashes are the kernel's, bit for bit, so a client address maps to the very backend the
director must pick: that turns sh/mh checks from statistics into exact ones.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter
from collections.abc import Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MASK32 = 0xFFFFFFFF
MASK64 = 0xFFFFFFFFFFFFFFFF
GOLDEN_RATIO_32 = 0x61C88647  # include/linux/hash.h (since 4.7's hash_32 rewrite)
SH_TAB_BITS = 8  # CONFIG_IP_VS_SH_TAB_BITS default
DH_TAB_BITS = 8  # CONFIG_IP_VS_DH_TAB_BITS default
MH_PRIMES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)
MH_TAB_INDEX = 12  # CONFIG_IP_VS_MH_TAB_INDEX default -> 4093 slots
MH_HASH1 = (2654435761, 2654435761)  # generate_hash_secret(): fixed keys, same on every boot
MH_HASH2 = (2654446892, 2654446892)


def addr_fold(addr: IPAddress) -> int:
    """ntohl(addr_fold): the IPv4 address, or the XOR of an IPv6 address's four words."""
    value = int(addr)
    if addr.version == 4:
        return value
    return (value >> 96 ^ value >> 64 ^ value >> 32 ^ value) & MASK32


def hash_32(value: int, bits: int) -> int:
    """include/linux/hash.h hash_32 (generic __hash_32, as on x86)."""
    return ((value * GOLDEN_RATIO_32) & MASK32) >> (32 - bits)


def sh_bucket(addr: IPAddress, port: int = 0, offset: int = 0, bits: int = SH_TAB_BITS) -> int:
    """ip_vs_sh_hashkey (4.x+): (offset + hash_32(port + addr_fold, bits)) & mask.

    `port` is the client port only with the sh-port flag (else 0).
    """
    return (offset + hash_32((port + addr_fold(addr)) & MASK32, bits)) & ((1 << bits) - 1)


def sh_bucket_legacy(addr: IPAddress, bits: int = SH_TAB_BITS) -> int:
    """ip_vs_sh_hashkey before the hash_32 change: only the low bits of the address count."""
    return (addr_fold(addr) * 2654435761) & ((1 << bits) - 1)


def sh_table(weights: Sequence[int], bits: int = SH_TAB_BITS) -> list[int | None]:
    """ip_vs_sh_reassign: each dest in list order takes `weight` consecutive buckets.

    `++d_count >= weight` means a weight-0 dest still takes one bucket, and weights summing
    past the table size leave later dests without any.
    """
    size = 1 << bits
    if not weights:
        return [None] * size
    table: list[int | None] = []
    i = count = 0
    for _ in range(size):
        table.append(i)
        count += 1
        if count >= weights[i]:
            i = (i + 1) % len(weights)
            count = 0
    return table


def sh_pick(
    table: Sequence[int | None],
    weights: Sequence[int],
    addr: IPAddress,
    port: int = 0,
    fallback: bool = False,
    bits: int = SH_TAB_BITS,
) -> int | None:
    """ip_vs_sh_get / ip_vs_sh_get_fallback: the dest for a client (None = no dest)."""
    ihash = sh_bucket(addr, port, 0, bits)
    dest = table[ihash]
    if dest is None or weights[dest] > 0:
        return dest
    if not fallback:
        return None
    size = 1 << bits
    for offset in range(size):
        dest = table[sh_bucket(addr, port, (offset + ihash) % size, bits)]
        if dest is None:
            return None
        if weights[dest] > 0:
            return dest
    return None


def dh_table(count: int, bits: int = DH_TAB_BITS) -> list[int | None]:
    """ip_vs_dh_reassign: buckets handed round-robin, one per dest; weights ignored."""
    size = 1 << bits
    return [i % count if count else None for i in range(size)]


def dh_bucket(addr: IPAddress, bits: int = DH_TAB_BITS) -> int:
    """ip_vs_dh_hashkey as the lab's 6.1 kernel runs it: hash_32(ntohl(addr_fold), bits) on the
    destination (the high bits of the golden-ratio product). The older form, the low bits of
    addr * 2654435761, put the lab's VIP on another real server: see dh_bucket_legacy."""
    return hash_32(addr_fold(addr), bits)


def dh_bucket_legacy(addr: IPAddress, bits: int = DH_TAB_BITS) -> int:
    """ip_vs_dh_hashkey before hash_32: (ntohl(addr_fold) * 2654435761) & mask."""
    return (addr_fold(addr) * 2654435761) & ((1 << bits) - 1)


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & MASK64


def hsiphash_u32(value: int, key: tuple[int, int]) -> int:
    """lib/siphash.c hsiphash of one u32 on a 64-bit kernel: SipHash-1-3, truncated to u32.

    (32-bit kernels run HalfSipHash-1-3 instead and map differently.)
    """
    v0 = 0x736F6D6570736575 ^ key[0]
    v1 = 0x646F72616E646F6D ^ key[1]
    v2 = 0x6C7967656E657261 ^ key[0]
    v3 = 0x7465646279746573 ^ key[1]
    b = (4 << 56) | (value & MASK32)

    def sipround() -> None:
        nonlocal v0, v1, v2, v3
        v0 = (v0 + v1) & MASK64
        v1 = _rotl(v1, 13) ^ v0
        v0 = _rotl(v0, 32)
        v2 = (v2 + v3) & MASK64
        v3 = _rotl(v3, 16) ^ v2
        v0 = (v0 + v3) & MASK64
        v3 = _rotl(v3, 21) ^ v0
        v2 = (v2 + v1) & MASK64
        v1 = _rotl(v1, 17) ^ v2
        v2 = _rotl(v2, 32)

    v3 ^= b
    sipround()
    v0 ^= b
    v2 ^= 0xFF
    for _ in range(3):
        sipround()
    return (v0 ^ v1 ^ v2 ^ v3) & MASK32


def mh_size(tab_index: int = MH_TAB_INDEX) -> int:
    """IP_VS_MH_TAB_SIZE: primes[CONFIG_IP_VS_MH_TAB_INDEX - 8]."""
    return MH_PRIMES[tab_index - 8]


def mh_hashkey(addr: IPAddress, port: int, key: tuple[int, int], offset: int = 0) -> int:
    """ip_vs_mh_hashkey: hsiphash(offset + port + ntohl(addr_fold))."""
    return hsiphash_u32((offset + port + addr_fold(addr)) & MASK32, key)


def mh_turns(weights: Sequence[int], tab_index: int = MH_TAB_INDEX) -> list[int]:
    """Slots each dest claims per round: weight / gcd, shifted to 6 bits (quantised).

    ip_vs_mh_gcd_weight / ip_vs_mh_shift_weight use last_weight, so a quiesced dest keeps
    its slots; pass last weights here.
    """
    positive = [w for w in weights if w > 0]
    if not positive:
        return [0] * len(weights)
    g = math.gcd(*positive)
    shift = max(0, (max(weights) // g).bit_length() - tab_index // 2)
    return [((w // g) >> shift) or (1 if w != 0 else 0) for w in weights]


def mh_table(
    dests: Sequence[tuple[IPAddress, int, int]], tab_index: int = MH_TAB_INDEX
) -> list[int | None]:
    """ip_vs_mh_permutate + ip_vs_mh_populate for (address, port, last_weight) dests."""
    size = mh_size(tab_index)
    turns = mh_turns([w for _, _, w in dests], tab_index)
    table: list[int | None] = [None] * size
    if not any(turns):
        return table
    perm = [mh_hashkey(a, p, MH_HASH1) % size for a, p, _ in dests]
    skip = [mh_hashkey(a, p, MH_HASH2) % (size - 1) + 1 for a, p, _ in dests]
    filled = 0
    while True:
        i = 0
        count = 0
        while i < len(dests):
            if turns[i] < 1:
                i += 1
                continue
            c = perm[i]
            while table[c] is not None:
                perm[i] = (perm[i] + skip[i]) % size
                c = perm[i]
            table[c] = i
            filled += 1
            if filled == size:
                return table
            count += 1
            if count >= turns[i]:
                count = 0
                i += 1


def mh_pick(
    table: Sequence[int | None],
    weights: Sequence[int],
    addr: IPAddress,
    port: int = 0,
    fallback: bool = False,
) -> int | None:
    """ip_vs_mh_get / ip_vs_mh_get_fallback: the dest for a client (None = no dest)."""
    size = len(table)
    ihash = mh_hashkey(addr, port, MH_HASH1) % size
    dest = table[ihash]
    if dest is None or weights[dest] > 0:
        return dest
    if not fallback:
        return None
    for offset in range(size):
        dest = table[mh_hashkey(addr, port, MH_HASH1, (offset + ihash) % size) % size]
        if dest is None:
            return None
        if weights[dest] > 0:
            return dest
    return None


def table_shares(table: Sequence[int | None], count: int) -> list[float]:
    """Each dest's share of the table's slots: the implementation's real expected share."""
    slots = Counter(d for d in table if d is not None)
    total = sum(slots.values())
    return [slots.get(i, 0) / total if total else 0.0 for i in range(count)]
