"""Netlink framing for generic netlink: nlmsghdr/genlmsghdr split, attribute TLV walk, encoders.

Pure: bytes in, values out. Every length is checked before it is used to slice, each nest
must be consumed exactly (stray bytes are an error), and unknown attribute types are kept
as raw bytes for the caller to ignore. Layouts: include/uapi/linux/netlink.h and
genetlink.h; alignment NLA_ALIGNTO = NLMSG_ALIGNTO = 4. Multi-byte integers are in host
order unless the IPVS table says big-endian (`BE16`, `BE32`).
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from typing import Generic, TypeVar

from lvsprobe.errors import ParseError

T = TypeVar("T")

# {type: payload} of a record, and of each laid-out nest by its type: what a fast splitter
# (kernel/genl/layout.py) hands `Attrs` instead of a walk.
Split = tuple[dict[int, bytes], dict[int, dict[int, bytes]]]
Splitter = Callable[[bytes], Split | None]

NLA_ALIGNTO = 4
NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
GENL_HDR = struct.Struct("=BBH")  # cmd, version, reserved
NLA_HDR = struct.Struct("=HH")  # len, type
NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF
SNIPPET_BYTES = 24  # how much of the offending bytes a ParseError shows (as hex)


class NlMsgType(enum.IntEnum):
    """Control message types below NLMSG_MIN_TYPE (0x10); families use 0x10 and up."""

    NOOP = 1
    ERROR = 2
    DONE = 3
    OVERRUN = 4


class NlFlag(enum.IntFlag):
    """nlmsg_flags bits (netlink.h); GET requests use DUMP = ROOT | MATCH."""

    REQUEST = 0x1
    MULTI = 0x2
    ACK = 0x4
    ECHO = 0x8
    DUMP_INTR = 0x10
    DUMP_FILTERED = 0x20
    ROOT = 0x100  # in an NLMSG_ERROR this bit means CAPPED
    MATCH = 0x200  # in an NLMSG_ERROR this bit means ACK_TLVS
    DUMP = 0x300


NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200
NLMSGERR_ATTR_MSG = 1  # extended ACK: the kernel's error text


def nla_align(length: int) -> int:
    """Round up to NLA_ALIGNTO (also NLMSG_ALIGN: both are 4)."""
    return (length + NLA_ALIGNTO - 1) & ~(NLA_ALIGNTO - 1)


@dataclass(frozen=True, slots=True)
class Where:
    """Where bytes came from, for ParseError: a source name and a message index."""

    source: str
    index: int | None = None

    def error(self, buf: bytes, offset: int, reason: str) -> ParseError:
        """A ParseError showing the bytes from `offset` as hex."""
        snippet = bytes(buf[offset : offset + SNIPPET_BYTES]).hex()
        return ParseError(self.source, self.index, snippet, f"{reason} (at byte {offset})")

    def sub(self, name: str) -> Where:
        """The same message, one nest deeper."""
        return Where(f"{self.source} {name}", self.index)


@dataclass(frozen=True, slots=True)
class Attr:
    """One attribute: its type (nesting/byte-order flag bits removed) and raw payload."""

    type: int
    payload: bytes
    nested_flag: bool = False


def walk_attrs(buf: bytes, where: Where) -> tuple[Attr, ...]:
    """Split a run of attributes; the run must be consumed exactly.

    The last attribute's alignment padding may be missing (nothing follows it); any other
    leftover is an error, as are lengths shorter than the header or running past the end.
    """
    return tuple(
        Attr(nla_type & NLA_TYPE_MASK, payload, bool(nla_type & NLA_F_NESTED))
        for nla_type, payload in _walk(buf, where)
    )


def _walk(buf: bytes, where: Where) -> Iterator[tuple[int, bytes]]:
    """(raw nla_type, payload) of each attribute, as `walk_attrs` checks them (no object
    per attribute: a 10^5-real-server dump has 10^6 of them)."""
    off, end = 0, len(buf)
    unpack_header = NLA_HDR.unpack_from
    header_size = NLA_HDR.size
    while off < end:
        if end - off < header_size:
            raise where.error(buf, off, f"{end - off} stray byte(s) where an attribute should be")
        nla_len, nla_type = unpack_header(buf, off)
        if nla_len < header_size:
            raise where.error(buf, off, f"attribute length {nla_len} is shorter than its header")
        if nla_len > end - off:
            raise where.error(
                buf,
                off,
                f"attribute type {nla_type & NLA_TYPE_MASK} claims {nla_len} bytes, "
                f"{end - off} left",
            )
        yield nla_type, bytes(buf[off + header_size : off + nla_len])
        off += nla_align(nla_len)


def encode_attr(attr_type: int, payload: bytes, *, nested_flag: bool = False) -> bytes:
    """One attribute with its padding (the kernel's IPVS replies never set NLA_F_NESTED)."""
    length = NLA_HDR.size + len(payload)
    if length > 0xFFFF:
        raise ValueError(f"attribute type {attr_type}: {length} bytes do not fit nla_len")
    flag = NLA_F_NESTED if nested_flag else 0
    return NLA_HDR.pack(length, attr_type | flag) + payload + bytes(nla_align(length) - length)


class Codec(Generic[T]):
    """How one attribute type is laid out: exact size, byte order, decode and encode."""

    def __init__(
        self,
        name: str,
        size: int | None,
        decode: Callable[[bytes], T],
        encode: Callable[[T], bytes],
        packer: struct.Struct | None = None,
    ) -> None:
        self.name = name
        self.size = size
        self._decode = decode
        self._encode = encode
        # An integer's struct: `Attrs.get` unpacks a payload of the right size itself, which
        # cannot fail (the hot path of a big dump; `decode` is for the rest, and the errors).
        self.packer = packer

    def decode(self, payload: bytes, where: Where, attr_name: str | Callable[[], str]) -> T:
        """The value; a ParseError naming the attribute (`attr_name`, or a function that
        gives it: made only for the error) when the payload is not one."""
        if self.size is not None and len(payload) != self.size:
            name = attr_name if isinstance(attr_name, str) else attr_name()
            raise ParseError(
                where.source,
                where.index,
                payload[:SNIPPET_BYTES].hex(),
                f"{name}: a {self.name} needs {self.size} bytes, got {len(payload)}",
            )
        try:
            return self._decode(payload)
        except ValueError as exc:
            name = attr_name if isinstance(attr_name, str) else attr_name()
            raise ParseError(
                where.source, where.index, payload[:SNIPPET_BYTES].hex(), f"{name}: {exc}"
            ) from exc

    def encode(self, value: T) -> bytes:
        return self._encode(value)


def _int_codec(name: str, fmt: str) -> Codec[int]:
    packer = struct.Struct(fmt)
    return Codec(name, packer.size, lambda b: packer.unpack(b)[0], packer.pack, packer)


def _decode_string(payload: bytes) -> str:
    nul = payload.find(b"\0")
    if nul < 0:
        raise ValueError("string without its NUL terminator")
    return payload[:nul].decode("utf-8", "backslashreplace")


U8 = _int_codec("u8", "=B")
U16 = _int_codec("u16", "=H")
BE16 = _int_codec("be16", "!H")
U32 = _int_codec("u32", "=I")
BE32 = _int_codec("be32", "!I")
U64 = _int_codec("u64", "=Q")
STRING = Codec[str]("NUL-terminated string", None, _decode_string, lambda s: s.encode() + b"\0")
BINARY = Codec[bytes]("binary", None, bytes, bytes)
IN_ADDR = Codec[ipaddress.IPv4Address](
    "in_addr", 4, ipaddress.IPv4Address, lambda a: a.packed
)  # network order, as struct in_addr
IN6_ADDR = Codec[ipaddress.IPv6Address]("in6_addr", 16, ipaddress.IPv6Address, lambda a: a.packed)


class Ints:
    """Integer attributes read together by `Attrs.ints`: their types and codecs, in order."""

    def __init__(self, items: Sequence[tuple[int, Codec[int]]]) -> None:
        packers = [codec.packer for _, codec in items]
        if len(items) < 2 or any(p is None or p.format[0] != "=" for p in packers):
            raise ValueError("Ints needs two or more native-order integer codecs")
        self.payloads = itemgetter(*(attr_type for attr_type, _ in items))
        self.sizes = tuple(p.size for p in packers if p is not None)
        self.packer = struct.Struct("=" + "".join(p.format[1:] for p in packers if p is not None))


class Attrs:
    """The attributes of one nest, indexed by type; the last of duplicates wins (nla_parse).

    Typed getters check the payload size; unknown types stay available via `unknown()`.
    """

    def __init__(
        self,
        buf: bytes,
        where: Where,
        names: type[enum.IntEnum],
        splitter: Splitter | None = None,
    ) -> None:
        """`splitter`: a fast way to split `buf` into the same attributes a walk gives
        (`Layouts.split`); when it gives None, the record is walked."""
        split = None if splitter is None else splitter(buf)
        if split is None:
            split = {nla_type & NLA_TYPE_MASK: value for nla_type, value in _walk(buf, where)}, {}
        self.where = where
        self._names = names
        self._buf = buf
        self._by_type, self._nests = split

    def _name(self, attr_type: int) -> str:
        try:
            return self._names(attr_type).name
        except ValueError:
            return f"attribute {attr_type}"

    def has(self, attr_type: int) -> bool:
        return attr_type in self._by_type

    def get(self, attr_type: int, codec: Codec[T]) -> T | None:
        payload = self._by_type.get(attr_type)
        if payload is None:
            return None
        packer = codec.packer
        if packer is not None and len(payload) == packer.size:
            value: T = packer.unpack(payload)[0]
            return value
        return codec.decode(payload, self.where, partial(self._name, attr_type))

    def ints(self, many: Ints) -> tuple[int, ...] | None:
        """The values of several integer attributes in one step, when every one is there
        with its size; None otherwise (`get` each then, which says what is wrong)."""
        try:
            payloads = many.payloads(self._by_type)
        except KeyError:
            return None
        if tuple(map(len, payloads)) != many.sizes:
            return None
        values: tuple[int, ...] = many.packer.unpack(b"".join(payloads))
        return values

    def need(self, attr_type: int, codec: Codec[T]) -> T:
        value = self.get(attr_type, codec)
        if value is None:
            raise ParseError(
                self.where.source, self.where.index, None, f"{self._name(attr_type)} missing"
            )
        return value

    def nest(self, attr_type: int, names: type[enum.IntEnum]) -> Attrs | None:
        payload = self._by_type.get(attr_type)
        if payload is None:
            return None
        where = self.where.sub(self._name(attr_type))
        split = self._nests.get(attr_type)
        if split is None:
            return Attrs(payload, where, names)
        nest = Attrs(b"", where, names)  # then given the split nest's attributes
        nest._buf, nest._by_type = payload, split
        return nest

    def unknown(self) -> tuple[Attr, ...]:
        """Attributes whose type is not in the table (newer kernels add some)."""
        known = {int(m) for m in self._names}
        return tuple(a for a in walk_attrs(self._buf, self.where) if a.type not in known)


def encode_attrs(items: Iterable[tuple[int, bytes]]) -> bytes:
    """A run of attributes, in the given order."""
    return b"".join(encode_attr(t, p) for t, p in items)


@dataclass(frozen=True, slots=True)
class NlMsg:
    """One netlink message: header fields and the payload after the 16-byte nlmsghdr."""

    msg_type: int
    flags: int
    seq: int
    port_id: int
    payload: bytes


def split_messages(buf: bytes, where: Where) -> tuple[NlMsg, ...]:
    """Split one received datagram into messages (each aligned to 4)."""
    out: list[NlMsg] = []
    off, end = 0, len(buf)
    while off < end:
        if end - off < NLMSG_HDR.size:
            raise where.error(buf, off, f"{end - off} stray byte(s) where a message should be")
        length, msg_type, flags, seq, port_id = NLMSG_HDR.unpack_from(buf, off)
        if length < NLMSG_HDR.size:
            raise where.error(buf, off, f"message length {length} is shorter than nlmsghdr")
        if length > end - off:
            raise where.error(buf, off, f"message claims {length} bytes, {end - off} left")
        out.append(
            NlMsg(msg_type, flags, seq, port_id, bytes(buf[off + NLMSG_HDR.size : off + length]))
        )
        off += nla_align(length)
    return tuple(out)


def encode_message(msg_type: int, flags: int, seq: int, port_id: int, payload: bytes) -> bytes:
    """nlmsghdr + payload (the kernel pads to 4; requests here always are)."""
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(payload), msg_type, flags, seq, port_id) + payload


@dataclass(frozen=True, slots=True)
class GenlMsg:
    """A generic netlink message body: command, version and the attribute bytes after it."""

    cmd: int
    version: int
    attrs: bytes


def split_genl(payload: bytes, where: Where) -> GenlMsg:
    """genlmsghdr (4 bytes) off the front of a family message's payload."""
    if len(payload) < GENL_HDR.size:
        raise where.error(payload, 0, f"{len(payload)} bytes, too short for genlmsghdr")
    cmd, version, _reserved = GENL_HDR.unpack_from(payload)
    return GenlMsg(cmd, version, bytes(payload[GENL_HDR.size :]))


def encode_genl(cmd: int, version: int, attrs: bytes = b"") -> bytes:
    return GENL_HDR.pack(cmd, version, 0) + attrs


@dataclass(frozen=True, slots=True)
class NlError:
    """An NLMSG_ERROR: errno (positive; 0 is an ACK) and the kernel's extended-ACK text."""

    errno: int
    message: str | None = None


def parse_error(msg: NlMsg, where: Where) -> NlError:
    """struct nlmsgerr: int error, the echoed request header (or all of it), then TLVs."""
    body = msg.payload
    if len(body) < 4 + NLMSG_HDR.size:
        raise where.error(body, 0, f"NLMSG_ERROR of {len(body)} bytes, expected at least 20")
    (error,) = struct.unpack_from("=i", body)
    echoed = NLMSG_HDR.size
    if not msg.flags & NLM_F_CAPPED:
        (echoed,) = struct.unpack_from("=I", body, 4)
        if echoed < NLMSG_HDR.size or 4 + echoed > len(body):
            raise where.error(body, 4, f"NLMSG_ERROR echoes {echoed} bytes, {len(body) - 4} left")
    text = None
    if msg.flags & NLM_F_ACK_TLVS:
        tlv_where = where.sub("extended ACK")
        for attr in walk_attrs(body[4 + nla_align(echoed) :], tlv_where):
            if attr.type == NLMSGERR_ATTR_MSG:
                text = STRING.decode(attr.payload, tlv_where, "NLMSGERR_ATTR_MSG")
    return NlError(-error, text)


def parse_done(msg: NlMsg, where: Where) -> int:
    """NLMSG_DONE carries the dump's final error (0 when the dump completed); returns errno."""
    if not msg.payload:
        return 0  # very old kernels sent an empty DONE
    if len(msg.payload) < 4:
        raise where.error(msg.payload, 0, f"NLMSG_DONE of {len(msg.payload)} bytes")
    (error,) = struct.unpack_from("=i", msg.payload)
    return int(-error)
