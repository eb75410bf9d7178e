"""The captured 6.1 conversation: decode equals the capture's JSON and ipvsadm's own views;
our request encoders reproduce the captured requests byte for byte; re-encoding the decoded
replies reproduces the captured replies byte for byte."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest

from lvsprobe.kernel.genl import ipvs, replies
from lvsprobe.kernel.genl.attrs import (
    NLMSG_HDR,
    U32,
    Attrs,
    GenlMsg,
    Where,
    split_genl,
    split_messages,
)
from lvsprobe.kernel.genl.capture import CapturedIPVS, Exchange
from lvsprobe.model import (
    Daemon,
    DaemonState,
    Family,
    Forward,
    Protocol,
    Rates,
    Service,
    ServiceFlag,
    Stats,
)

W = Where("fixture")


def _with_seq_pid(message: bytes, like: bytes) -> bytes:
    return message[:8] + like[8:16] + message[16:]


def _body(message: bytes) -> GenlMsg:
    (msg,) = split_messages(message, W)
    return split_genl(msg.payload, W)


@pytest.fixture(scope="module")
def reader(conversation_path: Path) -> Any:
    with CapturedIPVS.from_file(conversation_path) as client:
        yield client


@pytest.fixture(scope="module")
def services(reader: Any) -> tuple[Service, ...]:
    return reader.services()  # type: ignore[no-any-return]


def _stats(d: dict[str, int]) -> tuple[Stats, Rates]:
    return (
        Stats(d["conns"], d["inpkts"], d["outpkts"], d["inbytes"], d["outbytes"]),
        Rates(d["cps"], d["inpps"], d["outpps"], d["inbps"], d["outbps"]),
    )


def test_services_equal_the_capture_json(services: tuple[Service, ...], decoded: dict) -> None:
    assert len(services) == len(decoded["services"]) == 4
    for svc, want in zip(services, decoded["services"], strict=True):
        assert svc.key.family == Family(want["af"])
        assert svc.key.protocol == Protocol(want["protocol"])
        assert svc.key.address == ipaddress.ip_address(want["addr"])
        assert svc.key.port == want["port"] and svc.key.fwmark == 0
        assert svc.scheduler == want["sched_name"]
        assert svc.flags == ServiceFlag(int(want["flags"]["flags"], 16))
        assert svc.flags & ServiceFlag.HASHED  # set on every live service
        assert (svc.stats, svc.rates) == _stats(want["stats64"]) == _stats(want["stats"])
        if svc.flags & ServiceFlag.PERSISTENT:
            assert svc.persistence is not None
            assert svc.persistence.timeout_s == want["timeout"]
            assert svc.persistence.timeout_jiffies is None
            assert svc.persistence.prefix_len == 32  # "255.255.255.255"
        else:
            assert svc.persistence is None
        assert len(svc.real_servers) == len(want["dests"])
        for rs, wd in zip(svc.real_servers, want["dests"], strict=True):
            assert rs.address == ipaddress.ip_address(wd["addr"])
            assert rs.family == Family(wd["addr_family"])
            assert rs.port == wd["port"]
            assert rs.forward == Forward(wd["fwd_method"]) == Forward.MASQ
            assert rs.weight == wd["weight"]
            assert (rs.upper_threshold, rs.lower_threshold) == (wd["u_thresh"], wd["l_thresh"])
            assert (rs.active_conns, rs.inactive_conns) == (wd["active_conns"], wd["inact_conns"])
            assert rs.persistent_conns == wd["persist_conns"]
            assert rs.tunnel is not None
            assert (rs.tunnel.tun_type, rs.tunnel.port, rs.tunnel.flags) == (0, 0, 0)
            assert (rs.stats, rs.rates) == _stats(wd["stats64"]) == _stats(wd["stats"])


def test_ipv6_netmask_is_a_raw_prefix_length(services: tuple[Service, ...]) -> None:
    """The script read NETMASK as an IPv4 mask ("128.0.0.0"): it is host-order 128."""
    svc = services[0]
    assert svc.key.family is Family.INET6
    assert svc.persistence is None
    attrs = Attrs(replies.encode_service(svc), W, ipvs.SvcAttr)
    assert attrs.get(ipvs.SvcAttr.NETMASK, U32) == 128


def test_info_config_daemons_equal_the_capture_json(reader: Any, decoded: dict) -> None:
    version = decoded["info"]["version"]
    assert reader.info() == (
        f"{version >> 16}.{version >> 8 & 0xFF}.{version & 0xFF}",
        decoded["info"]["conn_tab_size"],
    )
    assert reader.family_id == decoded["family_id"]
    cfg = reader.config()
    want = decoded["config"]
    assert (cfg.tcp_s, cfg.tcp_fin_s, cfg.udp_s) == (
        want["timeout_tcp"],
        want["timeout_tcp_fin"],
        want["timeout_udp"],
    )
    (daemon,) = reader.daemons()
    (wd,) = decoded["daemons"]
    assert daemon.state == DaemonState(wd["state"])
    assert (daemon.interface, daemon.sync_id, daemon.max_len) == (
        wd["mcast_ifn"],
        wd["sync_id"],
        wd["sync_maxlen"],
    )
    assert daemon.group == ipaddress.ip_address(wd["mcast_group"])
    assert daemon.ttl == wd["mcast_ttl"]
    # MCAST_PORT is a host-order u16 (ip_vs_genl_fill_daemon: nla_put_u16). The capture script
    # read it as be16 (36898 = 0x9022); the real port is 0x2290 = 8848, as ipvsadm shows.
    assert wd["mcast_port"] == 36898
    assert daemon.port == int.from_bytes(wd["mcast_port"].to_bytes(2, "big"), "little") == 8848


# --- ipvsadm 1.31's views of the same state ------------------------------------------------


def _ipvsadm_key(text: str) -> tuple[str, str]:
    proto, addr = text.split()
    return proto, addr


def _addr_port(address: Any, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def _svc_label(svc: Service) -> tuple[str, str]:
    assert svc.key.protocol is not None
    return svc.key.protocol.name, _addr_port(svc.key.address, svc.key.port)


def _ipvsadm_table(path: Path) -> dict[tuple[str, str], tuple[list[str], dict[str, list[str]]]]:
    """service (proto, addr:port) -> (its fields, {real server addr:port: fields})."""
    table: dict[tuple[str, str], tuple[list[str], dict[str, list[str]]]] = {}
    current: dict[str, list[str]] = {}
    for line in path.read_text().splitlines()[3:]:
        fields = line.split()
        if line.startswith("  -> "):
            current[fields[1]] = fields[2:]
        else:
            current = {}
            table[(fields[0], fields[1])] = (fields[2:], current)
    return table


def test_header_line_matches_info(reader: Any, nat_ipvsadm: Path) -> None:
    version, size = reader.info()
    first = (nat_ipvsadm / "ipvsadm_-Ln.txt").read_text().splitlines()[0]
    assert first == f"IP Virtual Server version {version} (size={size})"


def test_exact_stats_match_ipvsadm(services: tuple[Service, ...], nat_ipvsadm: Path) -> None:
    table = _ipvsadm_table(nat_ipvsadm / "ipvsadm_-Ln_--exact_--stats.txt")
    assert set(table) == {_svc_label(s) for s in services}
    for svc in services:
        fields, dests = table[_svc_label(svc)]
        assert svc.stats is not None
        s = svc.stats
        assert [int(f) for f in fields] == [s.conns, s.in_pkts, s.out_pkts, s.in_bytes, s.out_bytes]
        assert set(dests) == {_addr_port(rs.address, rs.port) for rs in svc.real_servers}
        for rs in svc.real_servers:
            assert rs.stats is not None
            r = rs.stats
            want = [r.conns, r.in_pkts, r.out_pkts, r.in_bytes, r.out_bytes]
            assert [int(f) for f in dests[_addr_port(rs.address, rs.port)]] == want


def test_list_matches_ipvsadm(services: tuple[Service, ...], nat_ipvsadm: Path) -> None:
    table = _ipvsadm_table(nat_ipvsadm / "ipvsadm_-Ln.txt")
    for svc in services:
        fields, dests = table[_svc_label(svc)]
        flags = [svc.scheduler]
        if svc.persistence is not None:
            flags += ["persistent", str(svc.persistence.timeout_s)]
        assert fields == flags
        for rs in svc.real_servers:
            want = [rs.forward.ipvsadm_name, str(rs.weight), str(rs.active_conns)]
            assert dests[_addr_port(rs.address, rs.port)] == [*want, str(rs.inactive_conns)]


@pytest.mark.parametrize(
    ("view", "fields"),
    [
        ("thresholds", ("upper_threshold", "lower_threshold", "active_conns", "inactive_conns")),
        ("persistent-conn", ("weight", "persistent_conns", "active_conns", "inactive_conns")),
    ],
)
def test_dest_views_match_ipvsadm(
    services: tuple[Service, ...], nat_ipvsadm: Path, view: str, fields: tuple[str, ...]
) -> None:
    table = _ipvsadm_table(nat_ipvsadm / f"ipvsadm_-Ln_--{view}.txt")
    for svc in services:
        _flags, dests = table[_svc_label(svc)]
        for rs in svc.real_servers:
            got = [str(getattr(rs, name)) for name in fields]
            assert dests[_addr_port(rs.address, rs.port)] == got


def test_timeout_matches_ipvsadm(reader: Any, nat_ipvsadm: Path) -> None:
    t = reader.config()
    text = (nat_ipvsadm / "ipvsadm_-Ln_--timeout.txt").read_text()
    assert text == f"Timeout (tcp tcpfin udp): {t.tcp_s} {t.tcp_fin_s} {t.udp_s}\n"


def test_daemon_matches_ipvsadm(reader: Any, nat_ipvsadm: Path) -> None:
    (d,) = reader.daemons()
    assert isinstance(d, Daemon)
    text = (nat_ipvsadm / "ipvsadm_-Ln_--daemon_master.txt").read_text()
    want = (
        f"{d.state.name.lower()} sync daemon (mcast={d.interface}, syncid={d.sync_id}, "
        f"maxlen={d.max_len}, group={d.group}, port={d.port}, ttl={d.ttl})\n"
    )
    assert text == want


# --- byte-exact requests and replies ------------------------------------------------------


def _build_request(exchange: Exchange, family_id: int, services: tuple[Service, ...]) -> bytes:
    seq = 1
    label = exchange.label
    if label == "CTRL_CMD_GETFAMILY IPVS":
        return ipvs.encode_get_family(seq)
    if label == "IPVS_CMD_GET_INFO":
        return ipvs.encode_get_info(family_id, seq)
    if label == "IPVS_CMD_GET_CONFIG":
        return ipvs.encode_get_config(family_id, seq)
    if label == "IPVS_CMD_GET_SERVICE dump":
        return ipvs.encode_get_services(family_id, seq)
    if label == "IPVS_CMD_GET_DAEMON dump":
        return ipvs.encode_get_daemons(family_id, seq)
    match = re.fullmatch(r"IPVS_CMD_GET_DEST dump (.+):(\d+)", label)
    assert match, label
    (svc,) = [
        s
        for s in services
        if s.key.address == ipaddress.ip_address(match[1]) and s.key.port == int(match[2])
    ]
    return ipvs.encode_get_dests(family_id, seq, svc.key)


def test_requests_match_the_capture_byte_for_byte(
    conversation: tuple[Exchange, ...], services: tuple[Service, ...]
) -> None:
    assert len(conversation) == 9
    for exchange in conversation:
        built = _build_request(exchange, 32, services)
        assert _with_seq_pid(built, exchange.request) == exchange.request, exchange.label


def test_reencoded_replies_match_the_capture_byte_for_byte(
    conversation: tuple[Exchange, ...],
) -> None:
    fid = 32
    checked = 0
    for exchange in conversation:
        for message in exchange.replies:
            hdr = NLMSG_HDR.unpack_from(message)
            seq, pid = hdr[3], hdr[4]
            if hdr[1] != fid:
                continue
            body = _body(message)
            if body.cmd == ipvs.IPVSCmd.NEW_SERVICE:
                svc = ipvs.decode_service(ipvs.top_level(body.attrs, ipvs.CmdAttr.SERVICE))
                nest = replies.encode_service(svc)
                again = replies.encode_record(fid, ipvs.CmdAttr.SERVICE, nest, seq, pid)
            elif body.cmd == ipvs.IPVSCmd.NEW_DEST:
                rs = ipvs.decode_dest(ipvs.top_level(body.attrs, ipvs.CmdAttr.DEST))
                again = replies.encode_record(
                    fid, ipvs.CmdAttr.DEST, replies.encode_dest(rs), seq, pid
                )
            elif body.cmd == ipvs.IPVSCmd.NEW_DAEMON:
                d = ipvs.decode_daemon(ipvs.top_level(body.attrs, ipvs.CmdAttr.DAEMON))
                again = replies.encode_record(
                    fid, ipvs.CmdAttr.DAEMON, replies.encode_daemon(d), seq, pid
                )
            elif body.cmd == ipvs.IPVSCmd.SET_INFO:
                again = replies.encode_reply(
                    fid,
                    ipvs.IPVSCmd.SET_INFO,
                    replies.encode_info(*ipvs.decode_info(body.attrs)),
                    seq,
                    pid,
                    multi=False,
                )
            else:
                assert body.cmd == ipvs.IPVSCmd.SET_CONFIG
                again = replies.encode_reply(
                    fid,
                    ipvs.IPVSCmd.SET_CONFIG,
                    replies.encode_config(ipvs.decode_config(body.attrs)),
                    seq,
                    pid,
                    multi=False,
                )
            assert again == message
            checked += 1
    assert checked == 4 + 10 + 1 + 2  # services, dests, daemon, info + config


def test_dumps_end_with_done_and_gets_with_an_ack(conversation: tuple[Exchange, ...]) -> None:
    for exchange in conversation:
        last = exchange.replies[-1]
        (msg,) = split_messages(last, W)
        want = replies.encode_done(msg.seq, msg.port_id)
        if "dump" not in exchange.label:
            want = replies.encode_ack(exchange.request)
        assert last == want, exchange.label


def test_real_servers_are_in_kernel_order(services: tuple[Service, ...]) -> None:
    """The kernel lists dests newest first; ipvsadm sorts, we keep the kernel's order."""
    assert [str(rs.address) for rs in services[2].real_servers] == [
        "198.18.1.13",
        "198.18.1.12",
        "198.18.1.11",
    ]
