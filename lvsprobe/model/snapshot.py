"""The snapshot: services with their real servers, the connection table's summary, and the
rest of one namespace's IPVS state, as every reader produces it and every consumer reads it.

Data flows one way: kernel readers (procfs, generic netlink) build these; the exporter, the
status command and the analyzers only read them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from lvsprobe.model.service_rows import RealServerRows
from lvsprobe.model.values import (
    DaemonState,
    IPAddress,
    Origin,
    Persistence,
    Rates,
    RealServer,
    ServiceFlag,
    ServiceKey,
    Stats,
)


@dataclass(frozen=True, slots=True)
class Service:
    """A virtual service with its real servers in the kernel's list order.

    `real_servers` is always rows of a columnar `RealServerTable`, whichever reader made
    it: consumers read its columns, or its `objects()`. Given `RealServer` objects instead
    (tests, JSON), they are made into a table of their own here.
    """

    key: ServiceKey
    scheduler: str
    flags: ServiceFlag
    persistence: Persistence | None
    real_servers: RealServerRows
    stats: Stats | None = None
    rates: Rates | None = None
    pe_name: str | None = None

    def __post_init__(self) -> None:
        rows: RealServerRows | Iterable[RealServer] = self.real_servers
        if not isinstance(rows, RealServerRows):
            object.__setattr__(self, "real_servers", RealServerRows.of(rows))

    @property
    def one_packet(self) -> bool:
        return bool(self.flags & ServiceFlag.ONEPACKET)


@dataclass(frozen=True, slots=True)
class Conn:
    """One row of /proc/net/ip_vs_conn (or ip_vs_conn_sync, which adds `origin`).

    Persistence templates are rows too: protocol IP (fwmark), or client port 0 with state
    NONE/ASSURED. For an fwmark template the kernel prints the mark where the VIP would be:
    then `virtual_address` is None and `fwmark` holds it.
    """

    protocol: str
    client_address: IPAddress
    client_port: int
    virtual_address: IPAddress | None
    virtual_port: int
    dest_address: IPAddress
    dest_port: int
    state: str
    expires_s: int
    fwmark: int = 0
    pe_name: str | None = None
    pe_data: str | None = None
    origin: Origin | None = None

    @property
    def is_template(self) -> bool:
        return is_template_entry(self.protocol, self.client_port == 0, self.state)


# States a persistence template shows: the template table's (4.19+), or K4.0's protocol-named
# state 0 (`NONE` for TCP/SCTP, `UDP` for UDP). No connection has client port 0.
TEMPLATE_STATES = frozenset({"NONE", "ASSURED", "UDP"})


def is_template_entry(protocol: str, client_port_zero: bool, state: str) -> bool:
    """A conn-table row is a persistence template: protocol IP (an fwmark template), or client
    port 0 in a template state."""
    return protocol == "IP" or (client_port_zero and state in TEMPLATE_STATES)


@dataclass(frozen=True, slots=True)
class ConnCountKey:
    """The grouping the connection-table summary counts by."""

    protocol: str
    virtual_address: IPAddress | None
    virtual_port: int
    fwmark: int
    dest_address: IPAddress
    dest_port: int
    state: str
    template: bool
    origin: Origin | None
    # Hashing an ipaddress object runs Python code (~1 µs); a summary's keys are hashed
    # several times per scrape and live across scrapes, so the hash is made once.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields = (self.protocol, self.virtual_address, self.virtual_port, self.fwmark)
        more = (self.dest_address, self.dest_port, self.state, self.template, self.origin)
        object.__setattr__(self, "_hash", hash(fields + more))

    def __hash__(self) -> int:
        return self._hash


@dataclass(frozen=True, slots=True)
class ConnSummary:
    """Entry counts of the connection table, without holding one object per entry."""

    counts: Mapping[ConnCountKey, int]
    total: int

    def by_state(self) -> dict[tuple[str, str], int]:
        """(protocol, state) -> entries, templates excluded."""
        out: dict[tuple[str, str], int] = {}
        for key, n in self.counts.items():
            if not key.template:
                out[(key.protocol, key.state)] = out.get((key.protocol, key.state), 0) + n
        return out

    @property
    def templates(self) -> int:
        return sum(n for key, n in self.counts.items() if key.template)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """`ipvsadm --timeout`: TCP established, TCP FIN_WAIT and UDP, in seconds (GET_CONFIG)."""

    tcp_s: int
    tcp_fin_s: int
    udp_s: int


@dataclass(frozen=True, slots=True)
class Daemon:
    """A connection-sync daemon (`ipvsadm --start-daemon`), from GET_DAEMON."""

    state: DaemonState
    interface: str
    sync_id: int
    max_len: int | None = None
    group: IPAddress | None = None
    port: int | None = None
    ttl: int | None = None


@dataclass(frozen=True, slots=True)
class Slab:
    """The ip_vs_conn slab cache: /proc/slabinfo row and/or /sys/kernel/slab/ip_vs_conn.

    `object_size` is sizeof(struct ip_vs_conn) (288 on 6.1 x86_64) where sysfs gives it;
    `slab_object_size` is what each entry really occupies (320, cache-line aligned).
    `merged` is True when SLUB merged the cache into another (no own slabinfo row).
    """

    active_objs: int | None
    num_objs: int | None
    slab_object_size: int | None
    objs_per_slab: int | None
    pages_per_slab: int | None
    object_size: int | None = None
    merged: bool = False


@dataclass(frozen=True, slots=True)
class SourceFailure:
    """One part of a snapshot that could not be read, and why (the rest is still good)."""

    source: str
    error: str


@dataclass(frozen=True, slots=True)
class Unread:
    """Parts of the state the interface that was read cannot show, and why (e.g. /proc has
    no per-service counters): absent by design, not failed, so said rather than logged."""

    parts: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything read from one network namespace at one moment.

    `loaded` False means IPVS is not loaded there (a state, not a failure). Parts that
    failed to read are None/empty and named in `failures`, parts the interface read cannot
    show in `unread`; `durations_s` times each source.
    """

    loaded: bool
    via: str  # "netlink" or "procfs"
    version: str | None = None
    conn_table_size: int | None = None
    services: tuple[Service, ...] = ()
    totals: Stats | None = None
    total_rates: Rates | None = None
    per_cpu: tuple[Stats, ...] = ()
    conns: ConnSummary | None = None
    sysctls: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    timeouts: Timeouts | None = None
    daemons: tuple[Daemon, ...] = ()
    slab: Slab | None = None
    failures: tuple[SourceFailure, ...] = ()
    warnings: tuple[str, ...] = ()
    durations_s: Mapping[str, float] = field(default_factory=dict)
    namespace: str | None = None
    unread: tuple[Unread, ...] = ()
