"""Kernel-format IPVS replies built from the model: the inverse of `ipvs`'s decoders.

Tests use these to build what ip_vs_genl_fill_service/_dest/_daemon/_stats{,64} would send
and to check decode(encode(x)) == x. Attribute order is the kernel's emission order. Only
GET_DEST's request key (`encode_service_key`) is ever sent to a kernel.
"""

from __future__ import annotations

import ipaddress
import struct

from lvsprobe.kernel.genl.attrs import (
    BE16,
    BE32,
    IN6_ADDR,
    IN_ADDR,
    NLM_F_CAPPED,
    NLMSG_HDR,
    STRING,
    U8,
    U16,
    U32,
    U64,
    NlFlag,
    NlMsgType,
    encode_attr,
    encode_attrs,
    encode_genl,
    encode_message,
)
from lvsprobe.kernel.genl.tables import (
    ADDR_LEN,
    FLAGS,
    IPVS_GENL_VERSION,
    STATS32_CODECS,
    CmdAttr,
    DaemonAttr,
    DestAttr,
    InfoAttr,
    IPVSCmd,
    SvcAttr,
)
from lvsprobe.model import (
    Daemon,
    Family,
    IPAddress,
    Rates,
    RealServer,
    Service,
    ServiceKey,
    Stats,
    Timeouts,
)


def encode_address(address: IPAddress) -> bytes:
    return address.packed.ljust(ADDR_LEN, b"\0")


def netmask_bytes(prefix_len: int, family: Family) -> bytes:
    if family is Family.INET6:
        return U32.encode(prefix_len)
    return BE32.encode((0xFFFFFFFF << (32 - prefix_len)) & 0xFFFFFFFF)


def encode_stats(stats: Stats, rates: Rates, *, wide: bool) -> bytes:
    """A STATS/STATS64 nest body as ip_vs_genl_fill_stats{,64} writes it (x86_64: no PAD)."""
    values = (
        stats.conns,
        stats.in_pkts,
        stats.out_pkts,
        stats.in_bytes,
        stats.out_bytes,
        rates.conns_per_s,
        rates.in_pkts_per_s,
        rates.out_pkts_per_s,
        rates.in_bytes_per_s,
        rates.out_bytes_per_s,
    )
    items = []
    for attr, number in zip(STATS32_CODECS, values, strict=True):
        codec = U64 if wide else STATS32_CODECS[attr]
        mask = (1 << (8 * (codec.size or 8))) - 1  # the kernel truncates with (u32)
        items.append((int(attr), codec.encode(number & mask)))
    return encode_attrs(items)


def encode_service_key(key: ServiceKey) -> bytes:
    """AF plus FWMARK, or AF, PROTOCOL, ADDR, PORT: the key GET_DEST needs."""
    if key.family is None:
        raise ValueError("a netlink service key needs the address family")
    items = [(SvcAttr.AF, U16.encode(key.family))]
    if key.is_fwmark:
        items.append((SvcAttr.FWMARK, U32.encode(key.fwmark)))
    else:
        if key.protocol is None or key.address is None:
            raise ValueError("a non-fwmark service key needs protocol and address")
        items += [
            (SvcAttr.PROTOCOL, U16.encode(key.protocol)),
            (SvcAttr.ADDR, encode_address(key.address)),
            (SvcAttr.PORT, BE16.encode(key.port)),
        ]
    return encode_attrs(items)


def encode_service(service: Service, *, netmask_prefix: int | None = None) -> bytes:
    """A service nest body in the kernel's emission order (tests build replies with it).

    Non-persistent services still carry TIMEOUT 0 and a NETMASK (prefix 32/128 by default).
    """
    family = service.key.family
    if family is None:
        raise ValueError("a netlink service needs the address family")
    persist = service.persistence
    prefix = persist.prefix_len if persist else netmask_prefix
    if prefix is None:
        prefix = 128 if family is Family.INET6 else 32
    timeout = persist.timeout_s if persist and persist.timeout_s is not None else 0
    out = encode_service_key(service.key) + encode_attr(
        SvcAttr.SCHED_NAME, STRING.encode(service.scheduler)
    )
    if service.pe_name is not None:
        out += encode_attr(SvcAttr.PE_NAME, STRING.encode(service.pe_name))
    out += encode_attrs(
        [
            (SvcAttr.FLAGS, FLAGS.pack(int(service.flags), 0xFFFFFFFF)),
            (SvcAttr.TIMEOUT, U32.encode(timeout)),
            (SvcAttr.NETMASK, netmask_bytes(prefix, family)),
        ]
    )
    if service.stats is not None and service.rates is not None:
        out += encode_attr(SvcAttr.STATS, encode_stats(service.stats, service.rates, wide=False))
        out += encode_attr(SvcAttr.STATS64, encode_stats(service.stats, service.rates, wide=True))
    return out


def encode_dest(dest: RealServer) -> bytes:
    """A dest nest body in the kernel's emission order; None fields are left out."""
    items: list[tuple[int, bytes]] = [
        (DestAttr.ADDR, encode_address(dest.address)),
        (DestAttr.PORT, BE16.encode(dest.port)),
        (DestAttr.FWD_METHOD, U32.encode(dest.forward)),
        (DestAttr.WEIGHT, U32.encode(dest.weight)),
    ]
    if dest.tunnel is not None:
        items += [
            (DestAttr.TUN_TYPE, U8.encode(dest.tunnel.tun_type)),
            (DestAttr.TUN_PORT, BE16.encode(dest.tunnel.port)),
            (DestAttr.TUN_FLAGS, U16.encode(dest.tunnel.flags)),
        ]
    optional = (
        (DestAttr.U_THRESH, dest.upper_threshold),
        (DestAttr.L_THRESH, dest.lower_threshold),
        (DestAttr.ACTIVE_CONNS, dest.active_conns),
        (DestAttr.INACT_CONNS, dest.inactive_conns),
        (DestAttr.PERSIST_CONNS, dest.persistent_conns),
    )
    items += [(attr, U32.encode(value)) for attr, value in optional if value is not None]
    if dest.family is not None:
        items.append((DestAttr.ADDR_FAMILY, U16.encode(dest.family)))
    if dest.stats is not None and dest.rates is not None:
        items.append((DestAttr.STATS, encode_stats(dest.stats, dest.rates, wide=False)))
        items.append((DestAttr.STATS64, encode_stats(dest.stats, dest.rates, wide=True)))
    return encode_attrs(items)


def encode_daemon(daemon: Daemon) -> bytes:
    """A daemon nest body in the kernel's order; None fields are left out (K4.0 style)."""
    items: list[tuple[int, bytes]] = [
        (DaemonAttr.STATE, U32.encode(daemon.state)),
        (DaemonAttr.MCAST_IFN, STRING.encode(daemon.interface)),
        (DaemonAttr.SYNC_ID, U32.encode(daemon.sync_id)),
    ]
    if daemon.max_len is not None:
        items.append((DaemonAttr.SYNC_MAXLEN, U16.encode(daemon.max_len)))
    if daemon.port is not None:
        items.append((DaemonAttr.MCAST_PORT, U16.encode(daemon.port)))
    if daemon.ttl is not None:
        items.append((DaemonAttr.MCAST_TTL, U8.encode(daemon.ttl)))
    # the group comes last (ip_vs_genl_fill_daemon, 6.1)
    if isinstance(daemon.group, ipaddress.IPv4Address):
        items.append((DaemonAttr.MCAST_GROUP, IN_ADDR.encode(daemon.group)))
    elif isinstance(daemon.group, ipaddress.IPv6Address):
        items.append((DaemonAttr.MCAST_GROUP6, IN6_ADDR.encode(daemon.group)))
    return encode_attrs(items)


def encode_info(version: str, conn_tab_size: int) -> bytes:
    major, minor, patch = (int(part) for part in version.split("."))
    return encode_attrs(
        [
            (InfoAttr.VERSION, U32.encode(major << 16 | minor << 8 | patch)),
            (InfoAttr.CONN_TAB_SIZE, U32.encode(conn_tab_size)),
        ]
    )


def encode_config(timeouts: Timeouts) -> bytes:
    return encode_attrs(
        [
            (CmdAttr.TIMEOUT_TCP, U32.encode(timeouts.tcp_s)),
            (CmdAttr.TIMEOUT_TCP_FIN, U32.encode(timeouts.tcp_fin_s)),
            (CmdAttr.TIMEOUT_UDP, U32.encode(timeouts.udp_s)),
        ]
    )


# --- whole messages, as the kernel frames them ---------------------------------------------


def encode_reply(
    family_id: int, cmd: IPVSCmd, attrs: bytes, seq: int, port_id: int, *, multi: bool
) -> bytes:
    """One IPVS reply message (dump records carry NLM_F_MULTI)."""
    flags = NlFlag.MULTI if multi else 0
    return encode_message(
        family_id, flags, seq, port_id, encode_genl(cmd, IPVS_GENL_VERSION, attrs)
    )


def encode_record(family_id: int, record: CmdAttr, body: bytes, seq: int, port_id: int) -> bytes:
    """A dump record: NEW_SERVICE/NEW_DEST/NEW_DAEMON with its one nest."""
    cmd = {
        CmdAttr.SERVICE: IPVSCmd.NEW_SERVICE,
        CmdAttr.DEST: IPVSCmd.NEW_DEST,
        CmdAttr.DAEMON: IPVSCmd.NEW_DAEMON,
    }[record]
    return encode_reply(family_id, cmd, encode_attr(record, body), seq, port_id, multi=True)


def encode_done(seq: int, port_id: int, errno: int = 0) -> bytes:
    """NLMSG_DONE ending a dump; a non-zero errno reports a failed dump."""
    return encode_message(NlMsgType.DONE, NlFlag.MULTI, seq, port_id, struct.pack("=i", -errno))


def encode_ack(request: bytes, errno: int = 0) -> bytes:
    """NLMSG_ERROR answering `request`: an ACK (errno 0) or an error, header echoed (capped)."""
    _len, _type, _flags, seq, port_id = NLMSG_HDR.unpack_from(request)
    body = struct.pack("=i", -errno) + request[: NLMSG_HDR.size]
    return encode_message(NlMsgType.ERROR, NLM_F_CAPPED, seq, port_id, body)
