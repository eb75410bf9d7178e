"""`syn` flows: one raw TCP SYN each (scapy), stateless, to fill the director's connection
table (SYN_RECV entries) for memory tests. Needs CAP_NET_RAW. Bounded like every flow: the
plan's count and the run's duration; the answer (SYN-ACK, or the client kernel's RST) is not
awaited.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from lvsprobe.errors import LvsprobeError
from lvsprobe.replay.flowlog import FlowRecord
from lvsprobe.replay.plan import PlannedFlow

_sockets: dict[int, Any] = {}


def _l3_socket(version: int) -> Any:
    """One raw L3 socket per address family for the whole process (opening one is costly)."""
    if version not in _sockets:
        try:
            from scapy.config import conf

            _sockets[version] = conf.L3socket6() if version == 6 else conf.L3socket()
        except (OSError, ImportError) as exc:
            raise LvsprobeError(f"syn flows need a raw socket (CAP_NET_RAW): {exc}") from exc
    return _sockets[version]


def syn_packet(planned: PlannedFlow, sport: int, seq: int) -> Any:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6

    ip = (IPv6 if ":" in planned.server_address else IP)(
        src=planned.client_address, dst=planned.server_address
    )
    return ip / TCP(sport=sport, dport=planned.server_port, flags="S", seq=seq, window=64240)


async def send_syn(
    planned: PlannedFlow, record: FlowRecord, clock: Callable[[], float], seed: int
) -> None:
    """Send one SYN for `planned` from a seeded source port; fills `record`."""
    rng = random.Random(seed * 1_000_003 + planned.flow_id)
    sport = rng.randint(32768, 60999)
    packet = syn_packet(planned, sport, rng.getrandbits(32))
    version = 6 if ":" in planned.server_address else 4
    try:
        _l3_socket(version).send(packet)
    except OSError as exc:
        record.outcome, record.detail = f"error:{type(exc).__name__}", str(exc)
    else:
        record.outcome = "ok"
        record.out_bytes = 0
    record.client_port = sport
    record.connect_s = None
    record.end_s = clock()
    await asyncio.sleep(0)
