"""`syn` flows: one raw TCP SYN each, stateless, to fill the director's connection table
(SYN_RECV entries) for memory tests. Needs CAP_NET_RAW. Bounded like every flow: the plan's
count and the run's duration; the answer (SYN-ACK, or the client kernel's RST) is not awaited.

The TCP header is built once per destination with scapy's layers; each SYN then only gets
its source port, sequence number and checksum patched in, and goes out through a raw socket
bound to the client address (the kernel adds the IP header and routes it). Sending every
packet through scapy's own L3 socket cost ~10 ms each on the host (a route and ARP lookup
per packet): far too slow to fill a table under TCG.
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


def syn_header(dport: int) -> bytes:
    """A SYN's TCP header (with an MSS option), source port, seq and checksum zero."""
    if dport not in _templates:
        from scapy.layers.inet import TCP

        tcp = TCP(sport=0, dport=dport, flags="S", seq=0, window=64240, options=[("MSS", 1460)])
        header = bytearray(bytes(tcp))
        header[16:18] = b"\0\0"
        _templates[dport] = bytes(header)
    return _templates[dport]


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


async def send_syn(
    planned: PlannedFlow, record: FlowRecord, clock: Callable[[], float], seed: int
) -> None:
    """Send one SYN for `planned` from a seeded source port; fills `record`."""
    rng = random.Random(seed * 1_000_003 + planned.flow_id)
    sport = rng.randint(32768, 60999)
    segment = syn_segment(
        planned.client_address,
        planned.server_address,
        planned.server_port,
        sport,
        rng.getrandbits(32),
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
    await asyncio.sleep(0)
