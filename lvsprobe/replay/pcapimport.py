"""`replay import`: TCP/UDP flows from a capture, turned into a scenario with a `recorded` list.

Two readers: the fast path parses classic pcap record headers and IPv4/IPv6 + TCP/UDP headers
with struct (no per-packet objects: measured ~4x faster than dpkt's Ethernet decode, see
bench/bench_replay_import.py); pcapng goes through dpkt's reader. Application detail (HTTP
request line, FTP commands, TLS SNI and session id) comes from tshark's dissectors through
pyshark, on request (`--detail`: it is much slower).

A truncated or corrupt capture gives the flows read before the damage and says where it
stopped (`ImportResult.error`).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from lvsprobe.errors import ParseError

_PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
# link type -> bytes before the IP header (None: look at the ethertype)
_LINK_ETHERNET, _LINK_RAW, _LINK_SLL, _LINK_NULL = 1, 101, 113, 0
HTTP_METHODS = (b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC")
FlowKey = tuple[int, str, int, str, int]  # proto, client, cport, server, sport


@dataclass(slots=True)
class Flow:
    protocol: int
    client: str
    client_port: int
    server: str
    server_port: int
    start: float
    end: float
    packets: int = 0
    client_bytes: int = 0
    server_bytes: int = 0
    syn_seen: bool = False
    first_payload: bytes = b""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ImportResult:
    flows: list[Flow]
    packets: int
    error: str | None = None


def _ip_flow(buf: bytes, off: int) -> tuple[int, bytes, int, bytes, int, int, int] | None:
    """(proto, src, sport, dst, dport, tcp flags, payload length) of an IP packet at `off`;
    addresses stay raw bytes here (converting each packet's would triple the cost)."""
    if len(buf) < off + 20:
        return None
    version = buf[off] >> 4
    if version == 4:
        ihl = (buf[off] & 15) * 4
        proto = buf[off + 9]
        total = (buf[off + 2] << 8) | buf[off + 3]
        src = buf[off + 12 : off + 16]
        dst = buf[off + 16 : off + 20]
        l4 = off + ihl
        end = min(len(buf), off + total) if total else len(buf)
    elif version == 6 and len(buf) >= off + 40:
        proto = buf[off + 6]
        src = buf[off + 8 : off + 24]
        dst = buf[off + 24 : off + 40]
        l4 = off + 40
        end = min(len(buf), l4 + ((buf[off + 4] << 8) | buf[off + 5]))
    else:
        return None
    if proto == 6 and len(buf) >= l4 + 20:
        sport, dport = struct.unpack_from("!HH", buf, l4)
        data_off = (buf[l4 + 12] >> 4) * 4
        return proto, src, sport, dst, dport, buf[l4 + 13], max(0, end - l4 - data_off)
    if proto == 17 and len(buf) >= l4 + 8:
        sport, dport = struct.unpack_from("!HH", buf, l4)
        return proto, src, sport, dst, dport, 0, max(0, end - l4 - 8)
    return None


def _ip_offset(link: int, buf: bytes) -> int | None:
    if link == _LINK_ETHERNET:
        off, ethertype = 14, (buf[12] << 8) | buf[13] if len(buf) >= 14 else 0
        while ethertype in (0x8100, 0x88A8) and len(buf) >= off + 4:  # VLAN tags
            ethertype = (buf[off + 2] << 8) | buf[off + 3]
            off += 4
        return off if ethertype in (0x0800, 0x86DD) else None
    if link in (_LINK_RAW, 228, 229, 12):
        return 0
    if link == _LINK_SLL:
        return 16
    if link == 276:  # LINUX_SLL2
        return 20
    if link == _LINK_NULL:
        return 4
    return None


_RawKey = tuple[int, bytes, int, bytes, int]


def _text(address: bytes) -> str:
    return ipaddress.ip_address(address).compressed


class _Flows:
    def __init__(self, keep_payload: int):
        self.flows: dict[_RawKey, Flow] = {}
        self.keep = keep_payload

    def add(self, ts: float, link: int, buf: bytes) -> None:
        off = _ip_offset(link, buf)
        if off is None:
            return
        parsed = _ip_flow(buf, off)
        if parsed is None:
            return
        proto, src, sport, dst, dport, flags, size = parsed
        start = len(buf) - size if proto == 17 else _tcp_payload_start(buf, off)
        self.account(ts, proto, src, sport, dst, dport, flags, size, buf, start)

    def account(
        self,
        ts: float,
        proto: int,
        src: bytes,
        sport: int,
        dst: bytes,
        dport: int,
        flags: int,
        size: int,
        buf: bytes,
        start: int,
    ) -> None:
        """Count one packet; its payload is buf[start:start+size]."""
        flows = self.flows
        flow = flows.get((proto, src, sport, dst, dport))
        from_client = True
        if flow is None:
            flow = flows.get((proto, dst, dport, src, sport))
            from_client = False
        if flow is None:
            if proto == 6 and flags & 0x12 == 0x12:  # SYN-ACK first: the sender is the server
                flow = Flow(proto, _text(dst), dport, _text(src), sport, ts, ts)
                flows[(proto, dst, dport, src, sport)] = flow
                from_client = False
            else:
                flow = Flow(proto, _text(src), sport, _text(dst), dport, ts, ts)
                flows[(proto, src, sport, dst, dport)] = flow
                from_client = True
            flow.syn_seen = bool(flags & 0x02)
        flow.packets += 1
        flow.end = ts
        if from_client:
            flow.client_bytes += size
            have = len(flow.first_payload)
            if size and have < self.keep:
                flow.first_payload += buf[start : start + min(size, self.keep - have)]
        else:
            flow.server_bytes += size


def _tcp_payload_start(buf: bytes, off: int) -> int:
    l4 = off + ((buf[off] & 15) * 4 if buf[off] >> 4 == 4 else 40)
    return l4 + (buf[l4 + 12] >> 4) * 4


# Ethernet + IPv4 without options + TCP, the common case, decoded in one unpack from the file
# buffer: total length, protocol, addresses, ports, data offset, flags.
_ETH_V4_TCP = struct.Struct("!12xH2xH5xB2x4s4sHH8xBB")


def _read_pcap(fh: BinaryIO, header: bytes, table: _Flows, source: str) -> tuple[int, str | None]:
    endian, unit = _PCAP_MAGIC[header[:4]]
    link = struct.unpack(endian + "I", header[20:24])[0] & 0x0FFFFFFF
    record = struct.Struct(endian + "IIII")
    data = fh.read()
    pos, packets, size = 0, 0, len(data)
    add, account = table.add, table.account
    fast = link == _LINK_ETHERNET
    unpack_fast = _ETH_V4_TCP.unpack_from
    while pos < size:
        if pos + 16 > size:
            return packets, f"{source}: truncated record header after packet {packets}"
        sec, frac, caplen, _ = record.unpack_from(data, pos)
        if caplen > 262144 * 4:
            return packets, f"{source}: corrupt record {packets + 1}: caplen {caplen}"
        if pos + 16 + caplen > size:
            return (
                packets,
                f"{source}: packet {packets + 1} truncated ({size - pos - 16} of {caplen} bytes)",
            )
        base = pos + 16
        if fast and caplen >= 54 and data[base + 14] == 0x45 and data[base + 23] == 6:
            ethertype, total, _, src, dst, sport, dport, doff, flags = unpack_fast(data, base)
            if ethertype == 0x0800:
                start = base + 34 + (doff >> 4) * 4
                end = min(base + caplen, base + 14 + total)
                account(
                    sec + frac * unit,
                    6,
                    src,
                    sport,
                    dst,
                    dport,
                    flags,
                    max(0, end - start),
                    data,
                    start,
                )
                pos = base + caplen
                packets += 1
                continue
        add(sec + frac * unit, link, data[base : base + caplen])
        pos = base + caplen
        packets += 1
    return packets, None


def _read_pcapng(path: Path, table: _Flows, source: str) -> tuple[int, str | None]:
    import dpkt

    packets = 0
    try:
        with path.open("rb") as fh:
            reader = dpkt.pcapng.Reader(fh)
            link = reader.datalink()
            for ts, buf in reader:
                table.add(float(ts), link, bytes(buf))
                packets += 1
    except (ValueError, struct.error, dpkt.dpkt.NeedData, dpkt.dpkt.UnpackError) as exc:
        return packets, f"{source}: pcapng damaged after packet {packets}: {exc}"
    return packets, None


def read_capture(path: Path, keep_payload: int = 2048) -> ImportResult:
    """Flows of a pcap/pcapng file, in start order. ParseError if it is not a capture at all."""
    source = str(path)
    table = _Flows(keep_payload)
    try:
        with path.open("rb") as fh:
            header = fh.read(24)
            if header[:4] in _PCAP_MAGIC and len(header) == 24:
                packets, error = _read_pcap(fh, header, table, source)
            elif header[:4] == _PCAPNG_MAGIC:
                packets, error = _read_pcapng(path, table, source)
            else:
                raise ParseError(source, None, header[:8], "not a pcap or pcapng capture")
    except OSError as exc:
        raise ParseError(source, None, None, f"cannot read: {exc.strerror or exc}") from exc
    flows = sorted(table.flows.values(), key=lambda f: f.start)
    return ImportResult(flows, packets, error)


def guess_kind(flow: Flow) -> str:
    """The replay kind a recorded flow is replayed as."""
    if flow.protocol == 17:
        return "udp"
    head = flow.first_payload[:4]
    if head in HTTP_METHODS or flow.server_port in (80, 8080):
        return "http"
    if flow.first_payload[:2] == b"\x16\x03" or flow.server_port == 443:
        return "tls"
    if flow.server_port == 21:
        return "ftp-active" if b"PORT " in flow.first_payload else "ftp-passive"
    return "tcp"
