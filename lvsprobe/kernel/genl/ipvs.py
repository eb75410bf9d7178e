"""The generic-netlink family "IPVS": decoders into the model, and the read-only requests.

Pure: attribute bytes in, `lvsprobe.model` objects out. The tables of
include/uapi/linux/ip_vs.h live in `tables` and the inverse encoders (kernel-format replies,
for round-trip tests) in `replies`; both are re-exported here. Each attribute's byte order
comes from its codec: `BE16` ports, `BE32` IPv4 netmask, host order otherwise.

Read-only by construction: the request builders (`requests`, re-exported here) are
GET_SERVICE/GET_DEST/GET_DAEMON dumps, GET_INFO, GET_CONFIG and the controller's GETFAMILY
only. No encoder exists for NEW, SET, DEL, ZERO or FLUSH.

pyroute2 0.9.7 (docs/kernel/netlink.md#why-not-pyroute2) byte-swaps the tunnel port, mis-decodes the
IPv6 netmask and GET_INFO, leaves daemon/config undecoded, and its `update` sends DEL.
"""

from __future__ import annotations

import ipaddress

from lvsprobe.errors import ParseError
from lvsprobe.kernel.genl.attrs import (
    BE32,
    BINARY,
    IN6_ADDR,
    IN_ADDR,
    STRING,
    U8,
    U16,
    U32,
    U64,
    Attrs,
    Ints,
    Splitter,
    Where,
)
from lvsprobe.kernel.genl.layout import Layouts
from lvsprobe.kernel.genl.replies import (
    encode_config,
    encode_daemon,
    encode_dest,
    encode_info,
    encode_service,
    encode_service_key,
    encode_stats,
)
from lvsprobe.kernel.genl.requests import (
    GetDestRequests,
    encode_get_config,
    encode_get_daemons,
    encode_get_dests,
    encode_get_family,
    encode_get_info,
    encode_get_services,
)
from lvsprobe.kernel.genl.tables import (
    ADDR_LEN,
    DEST_CODECS,
    FLAGS,
    FWD_MASK,
    GENL_ID_CTRL,
    IPVS_GENL_NAME,
    READ_ONLY_CMDS,
    SOURCE,
    STATS32_CODECS,
    SVC_CODECS,
    CmdAttr,
    CtrlAttr,
    CtrlCmd,
    DaemonAttr,
    DestAttr,
    InfoAttr,
    IPVSCmd,
    StatsAttr,
    SvcAttr,
)
from lvsprobe.model import (
    Daemon,
    DaemonState,
    Family,
    Forward,
    IPAddress,
    Persistence,
    Protocol,
    Rates,
    RealServer,
    RealServerRows,
    Service,
    ServiceFlag,
    ServiceKey,
    Stats,
    Timeouts,
    Tunnel,
)

__all__ = [
    "GENL_ID_CTRL",
    "IPVS_GENL_NAME",
    "READ_ONLY_CMDS",
    "CmdAttr",
    "CtrlAttr",
    "CtrlCmd",
    "DaemonAttr",
    "DestAttr",
    "GetDestRequests",
    "IPVSCmd",
    "InfoAttr",
    "StatsAttr",
    "SvcAttr",
    "decode_config",
    "decode_daemon",
    "decode_dest",
    "decode_family_id",
    "decode_info",
    "decode_service",
    "decode_stats",
    "encode_config",
    "encode_daemon",
    "encode_dest",
    "encode_get_config",
    "encode_get_daemons",
    "encode_get_dests",
    "encode_get_family",
    "encode_get_info",
    "encode_get_services",
    "encode_info",
    "encode_service",
    "encode_service_key",
    "encode_stats",
    "top_level",
]


def _where(source: str, index: int | None) -> Where:
    return Where(f"{SOURCE} {source}", index)


def _splitter(layouts: Layouts | None) -> Splitter | None:
    return None if layouts is None else layouts.split


def _fail(where: Where, reason: str) -> ParseError:
    return ParseError(where.source, where.index, None, reason)


# Enum members by value: a dict lookup, where calling the enum is a Python-level call
# per record (and an IntFlag's, several).
_FAMILIES = {int(member): member for member in Family}
_PROTOCOLS = {int(member): member for member in Protocol}
_SERVICE_FLAGS = {value: ServiceFlag(value) for value in range(int(max(ServiceFlag)) * 2)}
_PERSISTENT = int(ServiceFlag.PERSISTENT)


def _family(value: int, where: Where, what: str) -> Family:
    family = _FAMILIES.get(value)
    if family is None:
        raise _fail(where, f"{what}: unknown address family {value}")
    return family


def _address(raw: bytes, family: Family) -> IPAddress:
    if family is Family.INET:
        return ipaddress.IPv4Address(raw[:4])
    return ipaddress.IPv6Address(raw)


# --- stats ------------------------------------------------------------------------------


# The ten values of a stats nest in Stats then Rates order, read in one step when all are
# there with their sizes (a big dump has two nests per record).
_STATS_ORDER = tuple(StatsAttr)[:10]
_STATS64_INTS = Ints([(attr, U64) for attr in _STATS_ORDER])
_STATS32_INTS = Ints([(attr, STATS32_CODECS[attr]) for attr in _STATS_ORDER])


def decode_stats(attrs: Attrs, *, wide: bool) -> tuple[Stats, Rates]:
    """A STATS (wide=False) or STATS64 (wide=True) nest; PAD and unknown types are skipped."""
    values = attrs.ints(_STATS64_INTS if wide else _STATS32_INTS)
    if values is None:  # one is missing or of another size: read one by one, which says so
        values = tuple(
            attrs.need(attr, U64 if wide else STATS32_CODECS[attr]) for attr in _STATS_ORDER
        )
    return Stats(*values[:5]), Rates(*values[5:])


def _stats_of(attrs: Attrs, stats32: int, stats64: int) -> tuple[Stats | None, Rates | None]:
    """Prefer STATS64 (K4.1+, full u64) over STATS (counts and rates truncated to u32)."""
    for attr_type, wide in ((stats64, True), (stats32, False)):
        nest = attrs.nest(attr_type, StatsAttr)
        if nest is not None:
            return decode_stats(nest, wide=wide)
    return None, None


# --- services ---------------------------------------------------------------------------


def decode_netmask(netmask: bytes, family: Family, where: Where) -> int:
    """A service's NETMASK payload as a prefix length (IPv4: a contiguous be32 mask)."""
    if family is Family.INET6:
        # The kernel stores what the tool sent and echoes it: a host-order prefix length.
        prefix = U32.decode(netmask, where, "NETMASK")
        if prefix > 128:
            raise _fail(where, f"NETMASK: IPv6 prefix length {prefix} > 128")
        return prefix
    mask = BE32.decode(netmask, where, "NETMASK")
    prefix = bin(mask).count("1")
    if mask != (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF:
        raise _fail(where, f"NETMASK: {ipaddress.IPv4Address(mask)} is not a contiguous netmask")
    return prefix


def _protocol(value: int, where: Where) -> Protocol:
    protocol = _PROTOCOLS.get(value)
    if protocol is None:
        raise _fail(where, f"PROTOCOL: unknown protocol {value}")
    return protocol


def _service_key(attrs: Attrs) -> tuple[Family, ServiceKey]:
    where = attrs.where
    codec = SVC_CODECS
    family = _family(attrs.need(SvcAttr.AF, codec[SvcAttr.AF]), where, "AF")
    fwmark = attrs.get(SvcAttr.FWMARK, codec[SvcAttr.FWMARK])
    if fwmark:  # the kernel sends FWMARK (never 0) in place of PROTOCOL, ADDR and PORT
        return family, ServiceKey(family, protocol=None, address=None, port=0, fwmark=fwmark)
    raw = attrs.need(SvcAttr.ADDR, BINARY)
    if len(raw) != ADDR_LEN:
        raise _fail(where, f"ADDR: expected {ADDR_LEN} bytes, got {len(raw)}")
    return family, ServiceKey(
        family=family,
        protocol=_protocol(attrs.need(SvcAttr.PROTOCOL, codec[SvcAttr.PROTOCOL]), where),
        address=_address(raw, family),
        port=attrs.need(SvcAttr.PORT, codec[SvcAttr.PORT]),
    )


def decode_service(
    payload: bytes, *, index: int | None = None, layouts: Layouts | None = None
) -> Service:
    """The body of IPVS_CMD_ATTR_SERVICE (ip_vs_genl_fill_service) → Service, no real servers.

    `layouts`: those of the dump's earlier records (`service_layouts()`), a fast way through
    a big dump with the same result."""
    attrs = Attrs(payload, _where("service", index), SvcAttr, _splitter(layouts))
    family, key = _service_key(attrs)
    raw_flags = attrs.need(SvcAttr.FLAGS, BINARY)
    if len(raw_flags) != FLAGS.size:
        raise _fail(attrs.where, f"FLAGS: expected {FLAGS.size} bytes, got {len(raw_flags)}")
    raw = FLAGS.unpack(raw_flags)[0]
    flags = _SERVICE_FLAGS.get(raw)
    if flags is None:  # bits of a later kernel: kept
        flags = ServiceFlag(raw)
    persistence = None
    if raw & _PERSISTENT:
        persistence = Persistence(
            timeout_s=attrs.need(SvcAttr.TIMEOUT, SVC_CODECS[SvcAttr.TIMEOUT]),
            timeout_jiffies=None,
            prefix_len=decode_netmask(attrs.need(SvcAttr.NETMASK, BINARY), family, attrs.where),
        )
    stats, rates = _stats_of(attrs, SvcAttr.STATS, SvcAttr.STATS64)
    return Service(
        key=key,
        scheduler=attrs.need(SvcAttr.SCHED_NAME, STRING),
        flags=flags,
        persistence=persistence,
        real_servers=RealServerRows.of(()),
        stats=stats,
        rates=rates,
        pe_name=attrs.get(SvcAttr.PE_NAME, STRING),
    )


def service_layouts() -> Layouts:
    """Layouts for the SERVICE records of dumps (to pass to `decode_service`)."""
    return Layouts(nests=(SvcAttr.STATS, SvcAttr.STATS64))


# --- real servers -----------------------------------------------------------------------


def dest_layouts() -> Layouts:
    """Layouts for the DEST records of dumps (to pass to `decode_dest`)."""
    return Layouts(nests=(DestAttr.STATS, DestAttr.STATS64))


def decode_dest(
    payload: bytes,
    *,
    service_family: Family | None = None,
    index: int | None = None,
    layouts: Layouts | None = None,
) -> RealServer:
    """The body of IPVS_CMD_ATTR_DEST (ip_vs_genl_fill_dest) → RealServer.

    The address family comes from ADDR_FAMILY (sent since ~3.18), else `service_family`.
    `tunnel` is set whenever TUN_TYPE is present: 5.3+ sends it for every dest, so it only
    means something when `forward` is TUNNEL. `layouts`: as for `decode_service`
    (`dest_layouts()`).
    """
    attrs = Attrs(payload, _where("dest", index), DestAttr, _splitter(layouts))
    where = attrs.where
    codec = DEST_CODECS
    family_value = attrs.get(DestAttr.ADDR_FAMILY, codec[DestAttr.ADDR_FAMILY])
    family = None if family_value is None else _family(family_value, where, "ADDR_FAMILY")
    addr_family = family or service_family
    if addr_family is None:
        raise _fail(where, "ADDR_FAMILY missing and the service's family is unknown")
    raw = attrs.need(DestAttr.ADDR, BINARY)
    if len(raw) != ADDR_LEN:
        raise _fail(where, f"ADDR: expected {ADDR_LEN} bytes, got {len(raw)}")
    fwd = attrs.need(DestAttr.FWD_METHOD, codec[DestAttr.FWD_METHOD]) & FWD_MASK
    try:
        forward = Forward(fwd)
    except ValueError:
        raise _fail(where, f"FWD_METHOD: unknown forwarding method {fwd}") from None
    tunnel = None
    tun_type = attrs.get(DestAttr.TUN_TYPE, codec[DestAttr.TUN_TYPE])
    if tun_type is not None:
        tunnel = Tunnel(
            tun_type=tun_type,
            port=attrs.get(DestAttr.TUN_PORT, codec[DestAttr.TUN_PORT]) or 0,
            flags=attrs.get(DestAttr.TUN_FLAGS, codec[DestAttr.TUN_FLAGS]) or 0,
        )
    stats, rates = _stats_of(attrs, DestAttr.STATS, DestAttr.STATS64)
    return RealServer(
        address=_address(raw, addr_family),
        port=attrs.need(DestAttr.PORT, codec[DestAttr.PORT]),
        forward=forward,
        weight=attrs.need(DestAttr.WEIGHT, codec[DestAttr.WEIGHT]),
        active_conns=attrs.need(DestAttr.ACTIVE_CONNS, codec[DestAttr.ACTIVE_CONNS]),
        inactive_conns=attrs.need(DestAttr.INACT_CONNS, codec[DestAttr.INACT_CONNS]),
        persistent_conns=attrs.get(DestAttr.PERSIST_CONNS, codec[DestAttr.PERSIST_CONNS]),
        upper_threshold=attrs.get(DestAttr.U_THRESH, codec[DestAttr.U_THRESH]),
        lower_threshold=attrs.get(DestAttr.L_THRESH, codec[DestAttr.L_THRESH]),
        stats=stats,
        rates=rates,
        family=family,
        tunnel=tunnel,
    )


# --- daemons, info, config --------------------------------------------------------------


def decode_daemon(payload: bytes, *, index: int | None = None) -> Daemon:
    """The body of IPVS_CMD_ATTR_DAEMON (ip_vs_genl_fill_daemon) → Daemon."""
    attrs = Attrs(payload, _where("daemon", index), DaemonAttr)
    state = attrs.need(DaemonAttr.STATE, U32)
    try:
        daemon_state = DaemonState(state)
    except ValueError:
        raise _fail(attrs.where, f"STATE: unknown sync daemon state {state}") from None
    group: IPAddress | None = attrs.get(DaemonAttr.MCAST_GROUP, IN_ADDR)
    if group is None:
        group = attrs.get(DaemonAttr.MCAST_GROUP6, IN6_ADDR)
    return Daemon(
        state=daemon_state,
        interface=attrs.need(DaemonAttr.MCAST_IFN, STRING),
        sync_id=attrs.need(DaemonAttr.SYNC_ID, U32),
        max_len=attrs.get(DaemonAttr.SYNC_MAXLEN, U16),
        group=group,
        port=attrs.get(DaemonAttr.MCAST_PORT, U16),  # host order, unlike service ports
        ttl=attrs.get(DaemonAttr.MCAST_TTL, U8),
    )


def decode_info(attrs: bytes, *, index: int | None = None) -> tuple[str, int]:
    """A GET_INFO reply's top-level attributes → ("1.2.1", connection table size)."""
    table = Attrs(attrs, _where("info", index), InfoAttr)
    version = table.need(InfoAttr.VERSION, U32)
    text = f"{version >> 16}.{(version >> 8) & 0xFF}.{version & 0xFF}"
    return text, table.need(InfoAttr.CONN_TAB_SIZE, U32)


def decode_config(attrs: bytes, *, index: int | None = None) -> Timeouts:
    """A GET_CONFIG reply's top-level TIMEOUT_* attributes → Timeouts (seconds).

    A kernel built without TCP or UDP support omits that protocol's timeouts; ipvsadm shows
    0 for them then, and so does this.
    """
    table = Attrs(attrs, _where("config", index), CmdAttr)
    return Timeouts(
        tcp_s=table.get(CmdAttr.TIMEOUT_TCP, U32) or 0,
        tcp_fin_s=table.get(CmdAttr.TIMEOUT_TCP_FIN, U32) or 0,
        udp_s=table.get(CmdAttr.TIMEOUT_UDP, U32) or 0,
    )


def top_level(attrs: bytes, attr: CmdAttr, *, index: int | None = None) -> bytes:
    """The nest body of SERVICE, DEST or DAEMON in a reply message's attributes."""
    table = Attrs(attrs, _where(attr.name.lower(), index), CmdAttr)
    return table.need(attr, BINARY)


# --- the controller ---------------------------------------------------------------------


def decode_family_id(attrs: bytes, *, index: int | None = None) -> int:
    """A CTRL_CMD_NEWFAMILY reply → the dynamic family id."""
    table = Attrs(attrs, Where("genl controller", index), CtrlAttr)
    return table.need(CtrlAttr.FAMILY_ID, U16)
