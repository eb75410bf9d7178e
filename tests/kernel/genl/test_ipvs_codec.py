"""IPVS decoders against hostile and old-kernel input; encode/decode round trips; read-only."""

from __future__ import annotations

import contextlib
import ipaddress
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsprobe.errors import ParseError
from lvsprobe.kernel.genl import ipvs, replies, requests
from lvsprobe.kernel.genl.attrs import (
    U16,
    U32,
    U64,
    Where,
    encode_attr,
    encode_attrs,
    split_genl,
    split_messages,
    walk_attrs,
)
from lvsprobe.kernel.genl.capture import Exchange
from lvsprobe.kernel.genl.tables import DaemonAttr, DestAttr, StatsAttr, SvcAttr
from lvsprobe.model import (
    Daemon,
    DaemonState,
    Family,
    Forward,
    Persistence,
    Protocol,
    Rates,
    RealServer,
    Service,
    ServiceFlag,
    ServiceKey,
    Stats,
    Timeouts,
    Tunnel,
)

V4 = ipaddress.IPv4Address("198.18.1.100")
V6 = ipaddress.IPv6Address("2001:2:0:1::100")
STATS = Stats(conns=5, in_pkts=2**33, out_pkts=7, in_bytes=2**40, out_bytes=9)
RATES = Rates(1, 2, 3, 4, 5)
SERVICE = Service(
    key=ServiceKey(Family.INET, Protocol.TCP, V4, 80),
    scheduler="wlc",
    flags=ServiceFlag.HASHED | ServiceFlag.PERSISTENT,
    persistence=Persistence(timeout_s=300, timeout_jiffies=None, prefix_len=24),
    real_servers=(),
    stats=STATS,
    rates=RATES,
)
DEST = RealServer(
    address=ipaddress.IPv4Address("198.18.1.11"),
    port=8080,
    forward=Forward.TUNNEL,
    weight=3,
    active_conns=4,
    inactive_conns=5,
    persistent_conns=6,
    upper_threshold=100,
    lower_threshold=10,
    stats=STATS,
    rates=RATES,
    family=Family.INET,
    tunnel=Tunnel(tun_type=1, port=6080, flags=3),
)
DAEMON = Daemon(DaemonState.BACKUP, "eth0", 7, 1472, ipaddress.IPv4Address("224.0.0.81"), 8848, 1)


def _captured(conversation: tuple[Exchange, ...], cmd: ipvs.IPVSCmd) -> list[bytes]:
    out = []
    for exchange in conversation:
        for message in exchange.replies:
            (msg,) = split_messages(message, Where("t"))
            if msg.msg_type == 32 and split_genl(msg.payload, Where("t")).cmd == cmd:
                out.append(message)
    return out


def _decode_message(message: bytes) -> object:
    """The full path from one received datagram to a model."""
    (msg,) = split_messages(message, Where("t"))
    body = split_genl(msg.payload, Where("t"))
    if body.cmd == ipvs.IPVSCmd.NEW_SERVICE:
        return ipvs.decode_service(ipvs.top_level(body.attrs, ipvs.CmdAttr.SERVICE))
    if body.cmd == ipvs.IPVSCmd.NEW_DEST:
        return ipvs.decode_dest(ipvs.top_level(body.attrs, ipvs.CmdAttr.DEST))
    return ipvs.decode_daemon(ipvs.top_level(body.attrs, ipvs.CmdAttr.DAEMON))


RECORDS = (ipvs.IPVSCmd.NEW_SERVICE, ipvs.IPVSCmd.NEW_DEST, ipvs.IPVSCmd.NEW_DAEMON)


# --- whole, byte by byte, trailing bytes ---------------------------------------------------


@pytest.mark.parametrize("cmd", RECORDS)
def test_every_truncated_message_is_a_parse_error(
    conversation: tuple[Exchange, ...], cmd: ipvs.IPVSCmd
) -> None:
    for message in _captured(conversation, cmd):
        _decode_message(message)  # whole: fine
        for cut in range(1, len(message)):
            with pytest.raises(ParseError):
                _decode_message(message[:cut])


def _boundaries(nest: bytes) -> set[int]:
    """Offsets where a run of attributes may validly end (with all, some or no padding)."""
    ends, off = {0}, 0
    for attr in walk_attrs(nest, Where("t")):
        length = 4 + len(attr.payload)
        ends |= set(range(off + length, off + (length + 3) // 4 * 4 + 1))
        off += (length + 3) // 4 * 4
    return ends


NEST_DECODERS: dict[ipvs.IPVSCmd, tuple[ipvs.CmdAttr, Callable[[bytes], object]]] = {
    ipvs.IPVSCmd.NEW_SERVICE: (ipvs.CmdAttr.SERVICE, ipvs.decode_service),
    ipvs.IPVSCmd.NEW_DEST: (ipvs.CmdAttr.DEST, ipvs.decode_dest),
    ipvs.IPVSCmd.NEW_DAEMON: (ipvs.CmdAttr.DAEMON, ipvs.decode_daemon),
}


@pytest.mark.parametrize("cmd", RECORDS)
def test_truncated_nests_fail_unless_cut_between_attributes(
    conversation: tuple[Exchange, ...], cmd: ipvs.IPVSCmd
) -> None:
    attr, decode = NEST_DECODERS[cmd]
    for message in _captured(conversation, cmd)[:2]:
        (msg,) = split_messages(message, Where("t"))
        nest = ipvs.top_level(split_genl(msg.payload, Where("t")).attrs, attr)
        ok = _boundaries(nest)
        for cut in range(len(nest)):
            if cut in ok:  # a shorter but well-formed nest: a model or a missing attribute
                with contextlib.suppress(ParseError):
                    decode(nest[:cut])
            else:
                with pytest.raises(ParseError):
                    decode(nest[:cut])


@pytest.mark.parametrize("cmd", RECORDS)
def test_trailing_bytes(conversation: tuple[Exchange, ...], cmd: ipvs.IPVSCmd) -> None:
    attr, decode = NEST_DECODERS[cmd]
    message = _captured(conversation, cmd)[0]
    (msg,) = split_messages(message, Where("t"))
    nest = ipvs.top_level(split_genl(msg.payload, Where("t")).attrs, attr)
    model = decode(nest)
    for stray in (b"\0", b"\0\0\0", b"\xff\xff\xff\xff", b"\x08\x00\x01\x00"):
        with pytest.raises(ParseError):
            decode(nest + stray)
    # a well-formed attribute the table does not know (a newer kernel): kept, ignored
    assert decode(nest + encode_attr(60, b"future")) == model
    for stray in (b"\0", b"\0" * 15):
        with pytest.raises(ParseError):
            _decode_message(message + stray)


# --- round trips ----------------------------------------------------------------------------

u8 = st.integers(0, 2**8 - 1)
u16 = st.integers(0, 2**16 - 1)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
names = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=15)
stats_rates = st.one_of(
    st.tuples(st.none(), st.none()),
    st.tuples(st.builds(Stats, u64, u64, u64, u64, u64), st.builds(Rates, u64, u64, u64, u64, u64)),
)


@st.composite
def services(draw: st.DrawFn) -> Service:
    family = draw(st.sampled_from(Family))
    if draw(st.booleans()):
        key = ServiceKey(family, None, None, 0, fwmark=draw(st.integers(1, 2**32 - 1)))
    else:
        addr: Any = (
            ipaddress.IPv4Address(draw(u32))
            if family is Family.INET
            else ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1)))
        )
        key = ServiceKey(family, draw(st.sampled_from(list(Protocol)[1:])), addr, draw(u16))
    flags = ServiceFlag(draw(st.integers(0, 0x3F)))
    persistence = None
    if flags & ServiceFlag.PERSISTENT:
        top = 32 if family is Family.INET else 128
        persistence = Persistence(draw(u32), None, draw(st.integers(0, top)))
    stats, rates = draw(stats_rates)
    pe = draw(st.none() | names)
    return Service(key, draw(names), flags, persistence, (), stats, rates, pe)


@st.composite
def dests(draw: st.DrawFn) -> RealServer:
    v6 = draw(st.booleans())
    addr: Any = (
        ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1)))
        if v6
        else ipaddress.IPv4Address(draw(u32))
    )
    family = draw(st.sampled_from([None, Family.INET6 if v6 else Family.INET]))
    stats, rates = draw(stats_rates)
    maybe = st.none() | u32
    tunnel = draw(st.none() | st.builds(Tunnel, u8, u16, u16))
    return RealServer(
        addr,
        draw(u16),
        draw(st.sampled_from(Forward)),
        draw(u32),
        draw(u32),
        draw(u32),
        draw(maybe),
        draw(maybe),
        draw(maybe),
        stats,
        rates,
        family,
        tunnel,
    )


groups = (
    st.none()
    | st.builds(ipaddress.IPv4Address, u32)
    | st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1))
)
daemons = st.builds(
    Daemon,
    st.sampled_from(DaemonState),
    names,
    u32,
    st.none() | u16,
    groups,
    st.none() | u16,
    st.none() | u8,
)


@settings(deadline=None)  # no wall-clock limits in tests
@given(services())
def test_service_round_trip(service: Service) -> None:
    assert ipvs.decode_service(replies.encode_service(service)) == service


@settings(deadline=None)  # no wall-clock limits in tests
@given(dests())
def test_dest_round_trip(dest: RealServer) -> None:
    family = Family.INET6 if dest.address.version == 6 else Family.INET
    assert ipvs.decode_dest(replies.encode_dest(dest), service_family=family) == dest


@settings(deadline=None)  # no wall-clock limits in tests
@given(daemons)
def test_daemon_round_trip(daemon: Daemon) -> None:
    assert ipvs.decode_daemon(replies.encode_daemon(daemon)) == daemon


@settings(deadline=None)  # no wall-clock limits in tests
@given(st.builds(Timeouts, u32, u32, u32), u8, u8, u8, u32)
def test_config_and_info_round_trip(
    t: Timeouts, major: int, minor: int, patch: int, size: int
) -> None:
    assert ipvs.decode_config(replies.encode_config(t)) == t
    version = f"{major}.{minor}.{patch}"
    assert ipvs.decode_info(replies.encode_info(version, size)) == (version, size)


@settings(deadline=None)  # no wall-clock limits in tests
@given(stats_rates.filter(lambda sr: sr[0] is not None))
def test_stats_round_trip_both_widths(sr: tuple[Stats, Rates]) -> None:
    from lvsprobe.kernel.genl.attrs import Attrs

    stats, rates = sr
    wide = replies.encode_stats(stats, rates, wide=True)
    assert ipvs.decode_stats(Attrs(wide, Where("t"), StatsAttr), wide=True) == sr
    narrow = replies.encode_stats(stats, rates, wide=False)
    got_stats, got_rates = ipvs.decode_stats(Attrs(narrow, Where("t"), StatsAttr), wide=False)
    m32 = 2**32 - 1  # the kernel's (u32) casts; bytes stay u64
    assert got_stats == Stats(
        stats.conns & m32,
        stats.in_pkts & m32,
        stats.out_pkts & m32,
        stats.in_bytes,
        stats.out_bytes,
    )
    assert got_rates.conns_per_s == rates.conns_per_s & m32


# --- any bytes: a model or a ParseError, nothing else --------------------------------------

DECODERS: list[Callable[[bytes], object]] = [
    ipvs.decode_service,
    lambda b: ipvs.decode_dest(b, service_family=Family.INET),
    ipvs.decode_dest,
    ipvs.decode_daemon,
    ipvs.decode_info,
    ipvs.decode_config,
    ipvs.decode_family_id,
]


@settings(deadline=None)  # no wall-clock limits in tests
@given(st.binary(max_size=400), st.sampled_from(DECODERS))
def test_any_bytes_decode_to_a_model_or_parse_error(
    buf: bytes, decode: Callable[[bytes], object]
) -> None:
    with contextlib.suppress(ParseError):
        decode(buf)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_real_nests_decode_or_parse_error(data: st.DataObject) -> None:
    nest = data.draw(
        st.sampled_from(
            [
                replies.encode_service(SERVICE),
                replies.encode_dest(DEST),
                replies.encode_daemon(DAEMON),
            ]
        )
    )
    buf = bytearray(nest)
    for _ in range(data.draw(st.integers(1, 4))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(u8)
    for decode in DECODERS[:4]:
        with contextlib.suppress(ParseError):
            decode(bytes(buf))


# --- hostile and old-kernel input ------------------------------------------------------------


def _svc_attrs(**override: bytes | None) -> bytes:
    """SERVICE's attributes with some replaced (bytes) or removed (None)."""
    items = {a.type: a.payload for a in walk_attrs(replies.encode_service(SERVICE), Where("t"))}
    for name, payload in override.items():
        attr = SvcAttr[name]
        if payload is None:
            items.pop(attr, None)
        else:
            items[attr] = payload
    return encode_attrs(items.items())


def _dest_attrs(**override: bytes | None) -> bytes:
    items = {a.type: a.payload for a in walk_attrs(replies.encode_dest(DEST), Where("t"))}
    for name, payload in override.items():
        attr = DestAttr[name]
        if payload is None:
            items.pop(attr, None)
        else:
            items[attr] = payload
    return encode_attrs(items.items())


def _stats_nest(wide: bool, **override: bytes) -> bytes:
    items = {
        a.type: a.payload
        for a in walk_attrs(replies.encode_stats(STATS, RATES, wide=wide), Where("t"))
    }
    for name, payload in override.items():
        items[StatsAttr[name]] = payload
    return encode_attrs(items.items())


HOSTILE_SERVICES = [
    (_svc_attrs(AF=U32.encode(2)), "AF: a u16 needs 2 bytes, got 4"),
    (_svc_attrs(AF=U16.encode(7)), "unknown address family 7"),
    (_svc_attrs(PORT=U32.encode(80)), "PORT: a be16 needs 2 bytes, got 4"),
    (_svc_attrs(PROTOCOL=U16.encode(99)), "unknown protocol 99"),
    (_svc_attrs(ADDR=V4.packed), "ADDR: expected 16 bytes, got 4"),
    (_svc_attrs(FLAGS=U32.encode(3)), "FLAGS: expected 8 bytes, got 4"),
    (_svc_attrs(SCHED_NAME=b"wlc"), "string without its NUL"),
    (_svc_attrs(TIMEOUT=U16.encode(3)), "TIMEOUT: a u32 needs 4 bytes"),
    (_svc_attrs(NETMASK=bytes([255, 0, 255, 0])), "not a contiguous netmask"),
    (_svc_attrs(AF=None), "AF missing"),
    (_svc_attrs(SCHED_NAME=None), "SCHED_NAME missing"),
    (_svc_attrs(TIMEOUT=None), "TIMEOUT missing"),
    (_svc_attrs(STATS64=_stats_nest(True, CONNS=U32.encode(1))), "CONNS: a u64 needs 8 bytes"),
    (_svc_attrs(STATS64=_stats_nest(True)[:-12]), "OUTBPS missing"),
    (_svc_attrs(STATS64=_stats_nest(True) + struct.pack("=HH", 40, 1)), "claims 40 bytes"),
    (_svc_attrs() + b"\x00\x00\x00\x00", "shorter than its header"),
]


@pytest.mark.parametrize(("payload", "reason"), HOSTILE_SERVICES)
def test_hostile_services(payload: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason) as info:
        ipvs.decode_service(payload, index=2)
    assert info.value.source.startswith("genl IPVS service") and info.value.line_no == 2


def test_ipv6_prefix_over_128_is_refused() -> None:
    v6 = Service(
        ServiceKey(Family.INET6, Protocol.TCP, V6, 80),
        "rr",
        ServiceFlag.PERSISTENT,
        Persistence(60, None, 64),
        (),
    )
    nest = replies.encode_service(v6)
    assert ipvs.decode_service(nest).persistence == Persistence(60, None, 64)
    items = {a.type: a.payload for a in walk_attrs(nest, Where("t"))}
    items[SvcAttr.NETMASK] = U32.encode(129)
    with pytest.raises(ParseError, match="prefix length 129 > 128"):
        ipvs.decode_service(encode_attrs(items.items()))


HOSTILE_DESTS = [
    (_dest_attrs(WEIGHT=U16.encode(1)), "WEIGHT: a u32 needs 4 bytes, got 2"),
    (_dest_attrs(FWD_METHOD=U32.encode(5)), "unknown forwarding method 5"),
    (_dest_attrs(PORT=b"\x00"), "PORT: a be16 needs 2 bytes, got 1"),
    (_dest_attrs(TUN_PORT=U32.encode(1)), "TUN_PORT: a be16 needs 2 bytes"),
    (_dest_attrs(TUN_TYPE=U16.encode(1)), "TUN_TYPE: a u8 needs 1 bytes"),
    (_dest_attrs(ADDR=None), "ADDR missing"),
    (_dest_attrs(ADDR_FAMILY=None), "ADDR_FAMILY missing and the service's family is unknown"),
    (
        _dest_attrs(STATS=_stats_nest(False, CONNS=U64.encode(1)), STATS64=None),
        "CONNS: a u32 needs 4",
    ),
    (
        _dest_attrs(STATS=_stats_nest(False, INBYTES=U32.encode(1)), STATS64=None),
        "INBYTES: a u64 needs 8",
    ),
]


@pytest.mark.parametrize(("payload", "reason"), HOSTILE_DESTS)
def test_hostile_dests(payload: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        ipvs.decode_dest(payload)


def test_hostile_daemons() -> None:
    good = walk_attrs(replies.encode_daemon(DAEMON), Where("t"))
    items = {a.type: a.payload for a in good}
    for attr, payload, reason in [
        (DaemonAttr.STATE, U32.encode(3), "unknown sync daemon state 3"),
        (DaemonAttr.MCAST_PORT, U32.encode(8848), "MCAST_PORT: a u16 needs 2"),
        (DaemonAttr.MCAST_GROUP, b"\xe0\0\0", "MCAST_GROUP: a in_addr needs 4"),
        (DaemonAttr.MCAST_IFN, b"e0", "NUL"),
    ]:
        with pytest.raises(ParseError, match=reason):
            ipvs.decode_daemon(encode_attrs({**items, attr: payload}.items()))


def test_k40_style_replies() -> None:
    """4.0: STATS only (32-bit counts, 64-bit bytes), no TUN_*, daemon with 3 attributes."""
    svc = _svc_attrs(STATS64=None)
    decoded = ipvs.decode_service(svc)
    m32 = 2**32 - 1
    assert decoded.stats == Stats(5, 2**33 & m32, 7, 2**40, 9)
    dest = _dest_attrs(STATS64=None, TUN_TYPE=None, TUN_PORT=None, TUN_FLAGS=None)
    rs = ipvs.decode_dest(dest)
    assert rs.tunnel is None and rs.stats is not None and rs.stats.in_bytes == 2**40
    old = encode_attrs(
        [
            (DaemonAttr.STATE, U32.encode(1)),
            (DaemonAttr.MCAST_IFN, b"eth0\0"),
            (DaemonAttr.SYNC_ID, U32.encode(9)),
        ]
    )
    assert ipvs.decode_daemon(old) == Daemon(DaemonState.MASTER, "eth0", 9)


def test_no_stats_at_all_and_stats64_preferred_with_pad() -> None:
    assert ipvs.decode_service(_svc_attrs(STATS=None, STATS64=None)).stats is None
    other = Stats(1, 1, 1, 1, 1)
    padded = encode_attr(StatsAttr.PAD, b"") + replies.encode_stats(STATS, RATES, wide=True)
    svc = ipvs.decode_service(
        _svc_attrs(STATS=replies.encode_stats(other, RATES, wide=False), STATS64=padded)
    )
    assert svc.stats == STATS


def test_fwmark_service_key_and_request() -> None:
    fwm = Service(
        ServiceKey(Family.INET6, None, None, 0, fwmark=7), "sh", ServiceFlag.HASHED, None, ()
    )
    nest = replies.encode_service(fwm)
    assert {a.type for a in walk_attrs(nest, Where("t"))} >= {SvcAttr.AF, SvcAttr.FWMARK}
    assert SvcAttr.PORT not in {a.type for a in walk_attrs(nest, Where("t"))}
    assert ipvs.decode_service(nest) == fwm
    request = ipvs.encode_get_dests(32, 5, fwm.key)
    assert request[20:] == encode_attr(
        ipvs.CmdAttr.SERVICE,
        encode_attrs([(SvcAttr.AF, U16.encode(10)), (SvcAttr.FWMARK, U32.encode(7))]),
    )


def test_config_without_tcp_support_reads_zero() -> None:
    only_udp = encode_attr(ipvs.CmdAttr.TIMEOUT_UDP, U32.encode(300))
    assert ipvs.decode_config(only_udp) == Timeouts(0, 0, 300)
    with pytest.raises(ParseError, match="TIMEOUT_UDP: a u32 needs 4"):
        ipvs.decode_config(encode_attr(ipvs.CmdAttr.TIMEOUT_UDP, U64.encode(300)))


def test_info_needs_both_attributes() -> None:
    assert ipvs.decode_info(replies.encode_info("1.2.1", 4096)) == ("1.2.1", 4096)
    with pytest.raises(ParseError, match="CONN_TAB_SIZE missing"):
        ipvs.decode_info(encode_attr(ipvs.InfoAttr.VERSION, U32.encode(0x010201)))


# --- read-only by construction ---------------------------------------------------------------

WRITE_WORDS = ("new", "set", "del", "zero", "flush", "add", "edit", "update")


def test_no_encoder_for_commands_that_change_ipvs() -> None:
    for module in (ipvs, replies):
        for name in dir(module):
            if name.startswith("encode_get"):
                continue
            if name.startswith("encode"):
                assert not set(name.split("_")) & set(WRITE_WORDS), name
    requests = [
        ipvs.encode_get_info(32, 1),
        ipvs.encode_get_config(32, 1),
        ipvs.encode_get_services(32, 1),
        ipvs.encode_get_dests(32, 1, SERVICE.key),
        ipvs.encode_get_daemons(32, 1),
    ]
    assert {req[16] for req in requests} == set(ipvs.READ_ONLY_CMDS)


@pytest.mark.parametrize("cmd", sorted(set(ipvs.IPVSCmd) - set(ipvs.READ_ONLY_CMDS)))
def test_request_builder_refuses_write_commands(cmd: ipvs.IPVSCmd) -> None:
    with pytest.raises(ValueError, match="only reads IPVS"):
        requests._request(32, cmd, 1, 1, 0)


@settings(max_examples=200, deadline=None)
@given(service=services(), seq=u32, family_id=st.integers(0x10, 0xFFFF))
def test_get_dest_requests_are_the_exact_encoders(
    service: Service, seq: int, family_id: int
) -> None:
    """The patched template sends byte for byte what `encode_get_dests` builds."""
    requests = ipvs.GetDestRequests(family_id)
    for key in (service.key, service.key):  # the template is reused
        assert requests.encode(seq, key) == ipvs.encode_get_dests(family_id, seq, key)
