"""The model's values: the kernel's enumerations and the small frozen records of a service
(its key, persistence, counters) and of one real server as an object (`RealServer`).

Units are in the names (`timeout_s`, `in_bytes`); values the kernel gives in another unit
keep that unit in their name (`timeout_jiffies`).
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Family(enum.IntEnum):
    """Address family numbers as the kernel uses them (AF_INET, AF_INET6)."""

    INET = 2
    INET6 = 10


class Protocol(enum.IntEnum):
    """IP protocol numbers of IPVS services and connections (ip_vs_proto_name)."""

    IP = 0  # fwmark persistence templates
    TCP = 6
    UDP = 17
    SCTP = 132


class Forward(enum.IntEnum):
    """Forwarding method, IP_VS_CONN_F_FWD_MASK; the kernel prints Bypass as Masq."""

    MASQ = 0
    LOCAL = 1
    TUNNEL = 2
    ROUTE = 3
    BYPASS = 4

    @property
    def ipvsadm_name(self) -> str:
        """The word /proc/net/ip_vs and ipvsadm print (ip_vs_fwd_name)."""
        return {1: "Local", 2: "Tunnel", 3: "Route"}.get(int(self), "Masq")

    @property
    def label(self) -> str:
        """A lower-case label for metrics and JSON: masq, local, tunnel, route, bypass."""
        return self.name.lower()


class ServiceFlag(enum.IntFlag):
    """IP_VS_SVC_F_* from include/uapi/linux/ip_vs.h."""

    PERSISTENT = 0x1
    HASHED = 0x2
    ONEPACKET = 0x4
    SCHED1 = 0x8
    SCHED2 = 0x10
    SCHED3 = 0x20


class DaemonState(enum.IntEnum):
    """IP_VS_STATE_MASTER / IP_VS_STATE_BACKUP."""

    MASTER = 1
    BACKUP = 2


class Origin(enum.Enum):
    """Who created a connection entry (/proc/net/ip_vs_conn_sync's Origin column)."""

    LOCAL = "LOCAL"
    SYNC = "SYNC"


@dataclass(frozen=True, slots=True)
class Stats:
    """Counters since the last zeroing (ipvsadm -Z); u64 on every kernel since 4.1."""

    conns: int
    in_pkts: int
    out_pkts: int
    in_bytes: int
    out_bytes: int


@dataclass(frozen=True, slots=True)
class Rates:
    """The kernel estimator's de-scaled rates (an EWMA refreshed every 2 s); bytes, not bits."""

    conns_per_s: int
    in_pkts_per_s: int
    out_pkts_per_s: int
    in_bytes_per_s: int
    out_bytes_per_s: int


@dataclass(frozen=True, slots=True)
class ServiceKey:
    """What identifies a virtual service: <protocol, address, port> or a firewall mark.

    `family` is None only for an fwmark service read from /proc/net/ip_vs, which prints no
    address family (the real servers' addresses tell it).
    """

    family: Family | None
    protocol: Protocol | None
    address: IPAddress | None
    port: int
    fwmark: int = 0

    @property
    def is_fwmark(self) -> bool:
        return self.fwmark != 0


@dataclass(frozen=True, slots=True)
class Persistence:
    """Persistence (`ipvsadm -p`): the timeout and the client netmask or prefix length.

    /proc/net/ip_vs gives the timeout in jiffies (HZ is not exported), netlink in seconds; a
    reader fills what its source gave, and `timeout_s` may be derived when HZ is known.
    """

    timeout_s: int | None
    timeout_jiffies: int | None
    prefix_len: int


@dataclass(frozen=True, slots=True)
class Tunnel:
    """Tunnel encapsulation of a real server (kernel 5.3+): 0 IPIP, 1 GUE, 2 GRE."""

    tun_type: int
    port: int
    flags: int


@dataclass(frozen=True, slots=True)
class RealServer:
    """A destination of a virtual service, as one object: the row view of a
    `RealServerTable` (`RealServerRows.objects()`). Fields netlink alone gives are None
    from procfs."""

    address: IPAddress
    port: int
    forward: Forward
    weight: int
    active_conns: int
    inactive_conns: int
    persistent_conns: int | None = None
    upper_threshold: int | None = None
    lower_threshold: int | None = None
    stats: Stats | None = None
    rates: Rates | None = None
    family: Family | None = None
    tunnel: Tunnel | None = None
