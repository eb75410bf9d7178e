"""IPVSNetlink's request/reply logic over a fake transport, and the real socket on this host.

This host has no IPVS (and must not get it: resolving "IPVS" would load ip_vs), so the real
socket is only exercised against the generic-netlink controller itself.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import struct
import subprocess
import sys
import tracemalloc
from collections import deque
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lvsprobe
from lvsprobe.errors import IPVSUnavailable, LvsprobeError, NamespaceError, NotPermitted, ParseError
from lvsprobe.kernel.genl import ipvs, replies
from lvsprobe.kernel.genl import socket as genl_socket
from lvsprobe.kernel.genl.attrs import (
    NLM_F_ACK_TLVS,
    NLMSG_HDR,
    NlFlag,
    Where,
    encode_attr,
    encode_message,
    split_genl,
    split_messages,
)
from lvsprobe.kernel.genl.capture import Exchange
from lvsprobe.kernel.genl.socket import IPVSNetlink, KernelRefused, NetlinkSocket, recv_bufsize
from lvsprobe.model import Family, Protocol, Service, ServiceFlag, ServiceKey

FID = 32


def _reseq(message: bytes, request: bytes) -> bytes:
    return message[:8] + request[8:16] + message[16:]


class Scripted:
    """A Transport: each request is answered by `answer(request)` (a list of datagrams)."""

    def __init__(self, answer: Callable[[bytes], list[bytes]]) -> None:
        self.answer = answer
        self.queue: deque[bytes] = deque()
        self.sent: list[bytes] = []
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sent.append(data)
        self.queue.extend(self.answer(data))

    def recv(self) -> bytes:
        assert self.queue, "the reader waits for a reply that never comes"
        return self.queue.popleft()

    def close(self) -> None:
        self.closed = True


def _in_order(conversation: tuple[Exchange, ...], *, batch: bool = False) -> Scripted:
    """Answers the captured requests strictly in the captured order, byte for byte."""
    pending = deque(conversation)

    def answer(request: bytes) -> list[bytes]:
        exchange = pending.popleft()
        assert _reseq(request, exchange.request) == exchange.request, exchange.label
        answers = [_reseq(r, request) for r in exchange.replies]
        return [b"".join(answers)] if batch else answers

    transport = Scripted(answer)
    transport.pending = pending  # type: ignore[attr-defined]
    return transport


def _ack(request: bytes, err: int = 0) -> list[bytes]:
    return [replies.encode_ack(request, err)]


def _family_reply(request: bytes) -> bytes:
    body = struct.pack("=BBH", ipvs.CtrlCmd.NEWFAMILY, 2, 0) + encode_attr(
        ipvs.CtrlAttr.FAMILY_ID, struct.pack("=H", FID)
    )
    return _reseq(encode_message(0x10, 0, 0, 0, body), request)


def _info_reply(request: bytes) -> bytes:
    return _reseq(
        replies.encode_reply(
            FID, ipvs.IPVSCmd.SET_INFO, replies.encode_info("1.2.1", 4096), 0, 0, multi=False
        ),
        request,
    )


def _cmd(request: bytes) -> int:
    return request[16]


@pytest.mark.parametrize("batch", [False, True])
def test_reads_the_captured_conversation_in_order(
    conversation: tuple[Exchange, ...], batch: bool
) -> None:
    transport = _in_order(conversation, batch=batch)
    with IPVSNetlink.connect(transport) as reader:
        assert reader.info() == ("1.2.1", 4096)
        assert reader.config().tcp_s == 900
        services = reader.services()
        daemons = reader.daemons()
    assert transport.closed and not transport.pending  # type: ignore[attr-defined]
    assert [len(s.real_servers) for s in services] == [3, 1, 3, 3]
    assert [d.port for d in daemons] == [8848]
    seqs = [NLMSG_HDR.unpack_from(r)[3] for r in transport.sent]
    assert seqs == list(range(1, 10))  # one fresh sequence number per request


def _fake_kernel(
    on_info: Callable[[bytes], list[bytes]] | None = None,
    on_dump: Callable[[bytes], list[bytes]] | None = None,
    on_family: Callable[[bytes], list[bytes]] | None = None,
) -> Scripted:
    def answer(request: bytes) -> list[bytes]:
        msg_type = NLMSG_HDR.unpack_from(request)[1]
        if msg_type == 0x10:
            return on_family(request) if on_family else [_family_reply(request), *_ack(request)]
        if _cmd(request) == ipvs.IPVSCmd.GET_INFO:
            return on_info(request) if on_info else [_info_reply(request), *_ack(request)]
        assert on_dump is not None
        return on_dump(request)

    return Scripted(answer)


def test_eperm_at_connect_is_not_permitted() -> None:
    transport = _fake_kernel(on_info=lambda r: _ack(r, errno.EPERM))
    with pytest.raises(
        NotPermitted, match=r"^netlink IPVS needs CAP_NET_ADMIN in the initial user namespace"
    ):
        IPVSNetlink.connect(transport)


def test_eacces_on_a_dump_is_not_permitted() -> None:
    transport = _fake_kernel(on_dump=lambda r: _ack(r, errno.EACCES))
    reader = IPVSNetlink.connect(transport)
    with pytest.raises(NotPermitted):
        reader.services()


def test_unknown_family_means_ipvs_unavailable() -> None:
    transport = _fake_kernel(on_family=lambda r: _ack(r, errno.ENOENT))
    with pytest.raises(IPVSUnavailable, match='IPVS is not loaded in network namespace "blue"'):
        IPVSNetlink.connect(transport, where='network namespace "blue"')


def test_other_errors_carry_errno_and_extended_ack_text() -> None:
    def refuse(request: bytes) -> list[bytes]:
        body = struct.pack("=i", -errno.EINVAL) + request[:16] + encode_attr(1, b"bad key\0")
        return [
            encode_message(2, 0x100 | NLM_F_ACK_TLVS, NLMSG_HDR.unpack_from(request)[3], 0, body)
        ]

    reader = IPVSNetlink.connect(_fake_kernel(on_dump=refuse))
    with pytest.raises(KernelRefused, match=r"GET_DAEMON: Invalid argument \(bad key\)") as info:
        reader.daemons()
    assert info.value.errno == errno.EINVAL


def test_done_with_an_error_fails_the_dump() -> None:
    def failing(request: bytes) -> list[bytes]:
        seq = NLMSG_HDR.unpack_from(request)[3]
        return [replies.encode_done(seq, 0, errno.EMSGSIZE)]

    reader = IPVSNetlink.connect(_fake_kernel(on_dump=failing))
    with pytest.raises(KernelRefused, match="GET_SERVICE: Message too long"):
        reader.services()


def _service_record(request: bytes, flags_extra: int = 0, msg_type: int = FID) -> bytes:
    svc = Service(
        ServiceKey(Family.INET, Protocol.TCP, ipaddress.IPv4Address("10.0.0.1"), 80),
        "rr",
        ServiceFlag.HASHED,
        None,
        (),
    )
    seq = NLMSG_HDR.unpack_from(request)[3]
    record = replies.encode_record(FID, ipvs.CmdAttr.SERVICE, replies.encode_service(svc), seq, 0)
    length, _t, flags, seq, pid = NLMSG_HDR.unpack_from(record)
    return NLMSG_HDR.pack(length, msg_type, flags | flags_extra, seq, pid) + record[16:]


def _dump(*records: Callable[[bytes], bytes]) -> Callable[[bytes], list[bytes]]:
    def answer(request: bytes) -> list[bytes]:
        if _cmd(request) == ipvs.IPVSCmd.GET_DEST:  # every service: no real servers
            return [replies.encode_done(NLMSG_HDR.unpack_from(request)[3], 0)]
        seq = NLMSG_HDR.unpack_from(request)[3]
        return [*(r(request) for r in records), replies.encode_done(seq, 0)]

    return answer


def test_stale_replies_of_an_earlier_request_are_skipped() -> None:
    def stale(request: bytes) -> bytes:
        msg = _service_record(request)
        seq = NLMSG_HDR.unpack_from(msg)[3]
        return msg[:8] + struct.pack("=I", seq - 1) + msg[12:]

    reader = IPVSNetlink.connect(_fake_kernel(on_dump=_dump(stale, _service_record)))
    (svc,) = reader.services()
    assert svc.real_servers == () and svc.scheduler == "rr"


def test_interrupted_dump_is_reported() -> None:
    interrupted = _dump(lambda r: _service_record(r, flags_extra=NlFlag.DUMP_INTR))
    reader = IPVSNetlink.connect(_fake_kernel(on_dump=interrupted))
    with pytest.raises(LvsprobeError, match="dump interrupted"):
        reader.services()


def test_foreign_message_type_is_a_parse_error() -> None:
    foreign = _dump(lambda r: _service_record(r, msg_type=FID + 1))
    reader = IPVSNetlink.connect(_fake_kernel(on_dump=foreign))
    with pytest.raises(ParseError, match="unexpected message type 33"):
        reader.services()


def test_truncated_datagram_is_a_parse_error() -> None:
    truncated = _dump(lambda r: _service_record(r)[:-5])
    reader = IPVSNetlink.connect(_fake_kernel(on_dump=truncated))
    with pytest.raises(ParseError, match="genl IPVS GET_SERVICE reply"):
        reader.services()


def test_dest_request_carries_each_service_key(conversation: tuple[Exchange, ...]) -> None:
    transport = _in_order(conversation)
    reader = IPVSNetlink.connect(transport)
    reader.config()
    services = reader.services()
    dest_requests = [r for r in transport.sent if _cmd(r) == ipvs.IPVSCmd.GET_DEST]
    for request, svc in zip(dest_requests, services, strict=True):
        (msg,) = split_messages(request, Where("t"))
        attrs = split_genl(msg.payload, Where("t")).attrs
        assert ipvs.top_level(attrs, ipvs.CmdAttr.SERVICE) == replies.encode_service_key(svc.key)
        assert msg.flags == NlFlag.REQUEST | NlFlag.DUMP


# --- open(): namespace, loaded check, cleanup -------------------------------------------


def test_open_refuses_without_proc_net_ip_vs_and_loads_nothing() -> None:
    if Path("/proc/thread-self/net/ip_vs").exists():
        pytest.skip("IPVS is loaded on this host")
    module_before = Path("/sys/module/ip_vs").exists()
    with pytest.raises(IPVSUnavailable, match="IPVS is not loaded in this network namespace"):
        IPVSNetlink.open()
    assert Path("/sys/module/ip_vs").exists() == module_before


def test_open_unknown_netns_is_a_namespace_error() -> None:
    with pytest.raises(NamespaceError, match='network namespace "lvsprobe-no-such-ns"'):
        IPVSNetlink.open(netns="lvsprobe-no-such-ns")


def test_open_closes_the_socket_when_connect_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = _fake_kernel(on_info=lambda r: _ack(r, errno.EPERM))
    monkeypatch.setattr(genl_socket, "NetlinkSocket", lambda timeout_s: transport)
    with pytest.raises(NotPermitted):
        IPVSNetlink.open(check_loaded=False)
    assert transport.closed


# --- the real socket, against the controller (never "IPVS": that would load ip_vs) ---------


def test_real_socket_resolves_the_controller_family() -> None:
    sock = NetlinkSocket(timeout_s=5)
    try:
        sock.send(ipvs.encode_get_family(7, name="nlctrl"))
        msgs = split_messages(sock.recv(), Where("t"))
        assert msgs[0].seq == 7
        assert ipvs.decode_family_id(split_genl(msgs[0].payload, Where("t")).attrs) == 0x10
    finally:
        sock.close()


def test_real_socket_times_out_with_a_clear_error() -> None:
    sock = NetlinkSocket(timeout_s=0.05)
    try:
        with pytest.raises(LvsprobeError, match=r"no reply from the kernel within 0\.05 s"):
            sock.recv()
    finally:
        sock.close()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_any_reply_bytes_end_in_a_result_or_an_lvsprobe_error(junk: bytes, reseq: bool) -> None:
    """Whatever the kernel side sends, only LvsprobeError (ParseError, ...) escapes."""

    def answer(request: bytes) -> list[bytes]:
        seq = NLMSG_HDR.unpack_from(request)[3]
        datagram = junk
        if reseq and len(junk) >= 16:  # make the junk look like a reply to this request
            datagram = junk[:8] + struct.pack("=I", seq) + junk[12:]
        return [datagram, replies.encode_done(seq, 0)]

    reader = IPVSNetlink.connect(_fake_kernel(on_dump=answer))
    with contextlib.suppress(LvsprobeError):
        reader.services()
    with contextlib.suppress(LvsprobeError):
        reader.daemons()


def test_dest_dump_errors_name_the_service() -> None:
    def answer(request: bytes) -> list[bytes]:
        if _cmd(request) == ipvs.IPVSCmd.GET_DEST:
            return _ack(request, errno.EINVAL)
        return _dump(_service_record)(request)

    reader = IPVSNetlink.connect(_fake_kernel(on_dump=answer))
    with pytest.raises(KernelRefused, match=r"GET_DEST of TCP 10\.0\.0\.1:80: Invalid argument"):
        reader.services()


def test_real_socket_receives_under_the_mmap_threshold() -> None:
    """A recv allocates less than glibc's smallest mmap threshold (128 KiB; 1<<17 bytes and
    a header did not, so mmap, mremap and munmap around a recv when the threshold had not
    grown), and gives whole datagrams."""
    sock = NetlinkSocket(timeout_s=5)
    try:
        tracemalloc.start()
        sock.send(ipvs.encode_get_family(7, name="nlctrl"))
        tracemalloc.reset_peak()
        reply = sock.recv()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 128 * 1024
        assert split_messages(reply, Where("t"))[0].seq == 7
        assert split_messages(sock.recv(), Where("t"))[0].msg_type == 2  # the ACK
    finally:
        sock.close()


_EXCHANGES = """
import sys
from lvsprobe.kernel.genl import ipvs
from lvsprobe.kernel.genl.socket import NetlinkSocket
sock = NetlinkSocket(timeout_s=5)
for seq in range(int(sys.argv[1])):
    sock.send(ipvs.encode_get_family(seq, name="nlctrl"))
    sock.recv()
    sock.recv()
"""


@pytest.mark.needs_bin("strace")
def test_real_socket_makes_one_syscall_per_send_and_recv() -> None:
    """No poll() before each (what a Python socket timeout costs): the timeouts are the
    kernel's. 50 exchanges of a request, its reply and its ACK: 50 sends, 100 recvs."""
    out = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=poll,ppoll,select,pselect6,sendto,recvmsg",
         sys.executable, "-c", _EXCHANGES, "50"],
        capture_output=True, text=True, timeout=120, check=True,
        env={**os.environ, "PYTHONPATH": str(Path(lvsprobe.__file__).parent.parent)},
    )  # fmt: skip
    calls = [line.split("(", 1)[0].split()[-1] for line in out.stderr.splitlines() if "(" in line]
    assert not [call for call in calls if "poll" in call or "select" in call]
    assert calls.count("sendto") == 50 and calls.count("recvmsg") == 100


def test_the_receive_buffer_holds_any_dump_skb_of_every_page_size() -> None:
    """A dump skb is the larger of the socket's largest recv buffer (capped under 32 KiB) and
    NLMSG_GOODSIZE, one page (at most 8 KiB) less skb_shared_info, which is at least 256
    bytes on any arch; the buffer must hold it, or each read fails with MSG_TRUNC."""
    for page_size in (4096, 16384, 65536):
        bufsize = recv_bufsize(page_size)
        assert bufsize >= min(page_size, 8192) - 256, page_size
    assert recv_bufsize(4096) + 320 == 8192  # one 8 KiB slab object per skb on 6.1 x86_64
