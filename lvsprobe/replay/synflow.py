"""`syn` flows: one raw TCP SYN each, stateless, to fill the director's connection table
(SYN_RECV entries) for memory tests. Needs CAP_NET_RAW. Bounded like every flow: the plan's
count and the run's duration; the answer (SYN-ACK, or the client kernel's RST) is not awaited.

Each SYN is a 24-byte TCP header (MSS option) packed here, byte for byte what scapy's
`TCP(flags="S", window=64240, options=[("MSS", 1460)])` builds (a unit test compares them):
importing scapy took 164 s in the TCG lab guest (its route table read alone 100 s), longer
than a whole fill. It goes out through a raw socket bound to the client address (the kernel
adds the IP header and routes it). Source ports are distinct per flow (flow id order from a
seeded base), so each SYN makes its own conn-table entry and a count of SYNs is a count of
entries.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import struct
from collections.abc import Callable

from lvsprobe.errors import LvsprobeError
from lvsprobe.replay.flowlog import FlowRecord
from lvsprobe.replay.plan import PlannedFlow

_sockets: dict[str, socket.socket] = {}
_templates: dict[int, bytes] = {}


SYN_WINDOW = 64240
SYN_MSS = 1460
PORT_BASE, PORT_SPAN = 32768, 28232  # Linux's default ip_local_port_range 32768-60999


def syn_header(dport: int) -> bytes:
    """A SYN's TCP header (MSS option), source port, seq and checksum zero."""
    if dport not in _templates:
        offset_flags = (6 << 12) | 0x02  # 6 words (20 + MSS option), SYN
        _templates[dport] = struct.pack(
            "!HHIIHHHHBBH", 0, dport, 0, 0, offset_flags, SYN_WINDOW, 0, 0, 2, 4, SYN_MSS
        )
    return _templates[dport]


def syn_source_port(seed: int, flow_id: int) -> int:
    """The source port of flow `flow_id`: distinct for PORT_SPAN consecutive flows."""
    return PORT_BASE + (seed * 7919 + flow_id) % PORT_SPAN


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def syn_segment(src: str, dst: str, dport: int, sport: int, seq: int) -> bytes:
    """The TCP segment of one SYN with its checksum (IPv4 or IPv6 pseudo-header)."""
    header = bytearray(syn_header(dport))
    struct.pack_into("!HHI", header, 0, sport, dport, seq)
    source, dest = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if source.version == 4:
        pseudo = source.packed + dest.packed + struct.pack("!BBH", 0, 6, len(header))
    else:
        pseudo = source.packed + dest.packed + struct.pack("!I3xB", len(header), 6)
    struct.pack_into("!H", header, 16, _checksum(pseudo + bytes(header)))
    return bytes(header)


def _raw_socket(src: str) -> socket.socket:
    """One raw TCP socket per client address for the whole process."""
    if src not in _sockets:
        family = socket.AF_INET6 if ":" in src else socket.AF_INET
        try:
            sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_TCP)
            sock.bind((src, 0))
        except PermissionError as exc:
            raise LvsprobeError(f"syn flows need a raw socket (CAP_NET_RAW): {exc}") from exc
        sock.setblocking(False)
        _sockets[src] = sock
    return _sockets[src]


def send_syn_now(
    planned: PlannedFlow, record: FlowRecord, clock: Callable[[], float], seed: int
) -> None:
    """Send the one SYN of `planned`; fills `record`."""
    sport = syn_source_port(seed, planned.flow_id)
    seq = random.Random(seed * 1_000_003 + planned.flow_id).getrandbits(32)
    segment = syn_segment(
        planned.client_address, planned.server_address, planned.server_port, sport, seq
    )
    record.client_port = sport
    try:
        _raw_socket(planned.client_address).sendto(segment, (planned.server_address, 0))
    except BlockingIOError:
        record.outcome, record.detail = "error:eagain", "raw socket send buffer full"
    except OSError as exc:
        record.outcome, record.detail = f"error:{type(exc).__name__}", str(exc)
    else:
        record.outcome = "ok"
    record.end_s = clock()


async def send_syn(
    planned: PlannedFlow, record: FlowRecord, clock: Callable[[], float], seed: int
) -> None:
    """`send_syn_now` for the asyncio runner (yields to the loop once)."""
    send_syn_now(planned, record, clock, seed)
    await asyncio.sleep(0)
