"""`IPVSNetlink`: the generic-netlink IPVS reader, the only module here that does I/O.

A plain AF_NETLINK/NETLINK_GENERIC socket (no pyroute2: see the package docstring) sends
read-only requests built by `ipvs` and decodes replies with it. Dumps are multipart and end
with NLMSG_DONE; GET_INFO/GET_CONFIG/GETFAMILY ask for an ACK and end with it. Replies
carrying another sequence number (late answers to a request that timed out) are skipped.

Resolving the name "IPVS" makes the kernel load ip_vs (docs/kernel/netlink.md#autoloading-ip_vs), so
`open()` first checks that `/proc/thread-self/net/ip_vs` exists in the target namespace.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Protocol, Self

from lvsprobe.errors import IPVSUnavailable, LvsprobeError, NotPermitted, ParseError
from lvsprobe.kernel.genl import ipvs
from lvsprobe.kernel.genl.attrs import (
    NLMSG_HDR,
    GenlMsg,
    NlFlag,
    NlMsg,
    NlMsgType,
    Where,
    nla_align,
    parse_done,
    parse_error,
    split_genl,
    split_messages,
)
from lvsprobe.kernel.genl.dest_table import DestTableBuilder
from lvsprobe.kernel.genl.runs import (
    DONE_SIZE,
    HeaderChecks,
    Records,
    Runs,
    is_done,
    records_run,
)
from lvsprobe.kernel.genl.service_table import decode_service_runs, services_of
from lvsprobe.kernel.netns import describe_netns, proc_net_root_for_thread, run_in_netns
from lvsprobe.model import (
    Daemon,
    Family,
    RealServerRows,
    Service,
    ServiceKey,
    Timeouts,
)

NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # errors echo only the request header
NETLINK_EXT_ACK = 11  # errors carry the kernel's text (4.12+)


def recv_bufsize(page_size: int) -> int:
    """The receive buffer, which also sizes the kernel's dump skbs
    (docs/kernel/netlink.md#reading-at-scale): with 4 KiB pages, 8 KiB less the skb's
    shared info, so that every datagram fits and each skb is one order-1 allocation (the
    lab's 6.1 kernel spent a third more per dump on the 32 KiB ones a 64 KiB buffer asks
    for). Other page sizes keep 64 KiB, above any skb the kernel makes (MSG_TRUNC is
    checked anyway)."""
    return 8192 - 320 if page_size == 4096 else 1 << 16


RECV_BUFSIZE = recv_bufsize(os.sysconf("SC_PAGE_SIZE"))
DEFAULT_TIMEOUT_S = 5.0
_TIMEVAL = struct.Struct("@ll")  # struct timeval: tv_sec, tv_usec
_MSG_TRUNC = int(socket.MSG_TRUNC)  # a plain int: `flags & MsgFlag` is a Python-level call
NOT_PERMITTED = "netlink IPVS needs CAP_NET_ADMIN in the initial user namespace"


class Transport(Protocol):
    """What IPVSNetlink needs from a socket: datagrams out and in. Tests pass a fake."""

    def send(self, data: bytes) -> None: ...

    def recv(self) -> bytes: ...

    def close(self) -> None: ...


class NetlinkSocket:
    """A bound NETLINK_GENERIC socket with a receive timeout (the real Transport)."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        try:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        except OSError as exc:
            raise LvsprobeError(f"netlink IPVS: cannot open a netlink socket: {exc}") from exc
        try:
            self._sock.bind((0, 0))  # the kernel picks our port id
        except OSError as exc:
            self._sock.close()
            raise LvsprobeError(f"netlink IPVS: cannot bind a netlink socket: {exc}") from exc
        # The timeouts are the kernel's (SO_RCVTIMEO/SO_SNDTIMEO) on a blocking socket: a
        # Python socket timeout would poll() before every send and recv, a third of a
        # read's syscalls (dear under TCG; a reply is queued before send returns anyway).
        timeval = _TIMEVAL.pack(int(timeout_s), int(timeout_s % 1 * 1e6))
        for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
            self._sock.setsockopt(socket.SOL_SOCKET, option, timeval)
        for option in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
            try:
                self._sock.setsockopt(SOL_NETLINK, option, 1)
            except OSError:
                continue  # kernels before 4.3/4.12: errors come without text, still with errno

    def send(self, data: bytes) -> None:
        try:
            self._sock.send(data)
        except BlockingIOError as exc:  # SO_SNDTIMEO ran out
            raise LvsprobeError(
                f"netlink IPVS: the kernel took no request within {self.timeout_s:g} s"
            ) from exc
        except OSError as exc:
            raise LvsprobeError(f"netlink IPVS: send failed: {exc}") from exc

    def recv(self) -> bytes:
        try:
            data, _anc, flags, _addr = self._sock.recvmsg(RECV_BUFSIZE)
        except BlockingIOError as exc:  # SO_RCVTIMEO ran out
            raise LvsprobeError(
                f"netlink IPVS: no reply from the kernel within {self.timeout_s:g} s"
            ) from exc
        except OSError as exc:
            raise LvsprobeError(f"netlink IPVS: receive failed: {exc}") from exc
        if flags & _MSG_TRUNC:
            raise LvsprobeError(f"netlink IPVS: a reply exceeded {RECV_BUFSIZE} bytes")
        return data

    def close(self) -> None:
        self._sock.close()


class KernelRefused(LvsprobeError):
    """The kernel answered a request with an error; `errno` keeps its code."""

    def __init__(self, err: int, what: str, text: str | None) -> None:
        self.errno = err
        detail = f" ({text})" if text else ""
        super().__init__(f"netlink IPVS {what}: {os.strerror(err)}{detail}")


def _refused(err: int, what: str, text: str | None) -> LvsprobeError:
    if err in (errno.EPERM, errno.EACCES):
        return NotPermitted(f"{NOT_PERMITTED} ({what}: {os.strerror(err)})")
    return KernelRefused(err, what, text)


class IPVSNetlink:
    """Reads one network namespace's IPVS state over generic netlink (read-only)."""

    def __init__(self, transport: Transport, family_id: int) -> None:
        self._transport = transport
        self.family_id = family_id
        self._seq = 0
        self._info: tuple[str, int] | None = None
        # The kernel's SERVICE record layouts, learned from the first ones (genl.layout);
        # DEST records are decoded column-wise (genl.dest_table).
        self._service_layouts = ipvs.service_layouts()
        self._header_checks: HeaderChecks = {}  # records_run's
        self._dest_requests: ipvs.GetDestRequests | None = None  # of family_id, made once

    @classmethod
    def open(
        cls,
        *,
        netns: str | None = None,
        pid: int | None = None,
        check_loaded: bool = True,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> Self:
        """A socket in the namespace of `netns` or `pid` (default: ours), family resolved.

        `check_loaded=False` skips the /proc check and so may load ip_vs as a side effect.
        Raises IPVSUnavailable, NotPermitted, NamespaceError or LvsprobeError.
        """
        where = describe_netns(netns=netns, pid=pid)

        def make() -> NetlinkSocket:
            if check_loaded and not (proc_net_root_for_thread() / "net/ip_vs").exists():
                raise IPVSUnavailable(where)
            return NetlinkSocket(timeout_s)

        transport = run_in_netns(make, netns=netns, pid=pid)
        try:
            return cls.connect(transport, where=where)
        except BaseException:
            transport.close()
            raise

    @classmethod
    def connect(cls, transport: Transport, *, where: str = "this network namespace") -> Self:
        """Resolve the "IPVS" family on an open transport (may autoload ip_vs), then GET_INFO.

        GET_INFO doubles as the permission probe: resolving needs no privilege, every IPVS
        command needs CAP_NET_ADMIN, so NotPermitted surfaces here and not mid-snapshot.
        """
        reader = cls(transport, family_id=0)
        try:
            replies = reader._exchange(
                lambda seq: ipvs.encode_get_family(seq), "resolving family IPVS", ipvs.GENL_ID_CTRL
            )
        except KernelRefused as exc:
            if exc.errno == errno.ENOENT:  # no such family: ip_vs is not loaded
                raise IPVSUnavailable(where) from exc
            raise
        reader.family_id = ipvs.decode_family_id(_single(replies, "GETFAMILY").attrs)
        fid = reader.family_id
        replies = reader._exchange(lambda s: ipvs.encode_get_info(fid, s), "GET_INFO", fid)
        reader._info = ipvs.decode_info(_single(replies, "GET_INFO").attrs)
        return reader

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()

    def info(self) -> tuple[str, int]:
        """GET_INFO as read at connect: ("1.2.1", connection hash table size).

        Both are fixed while ip_vs is loaded (the table size is a module parameter).
        """
        if self._info is None:
            fid = self.family_id
            replies = self._exchange(lambda s: ipvs.encode_get_info(fid, s), "GET_INFO", fid)
            self._info = ipvs.decode_info(_single(replies, "GET_INFO").attrs)
        return self._info

    def config(self) -> Timeouts:
        """GET_CONFIG: the tcp/tcpfin/udp timeouts in seconds."""
        fid = self.family_id
        replies = self._exchange(lambda s: ipvs.encode_get_config(fid, s), "GET_CONFIG", fid)
        return ipvs.decode_config(_single(replies, "GET_CONFIG").attrs)

    def services(self) -> tuple[Service, ...]:
        """Every service, each with its real servers (rows of one table), in the kernel's
        order.

        The GET_DEST dumps go one at a time, one send and two recvs each: a window of
        requests on the socket is not possible, and several sockets would make as many
        syscalls (docs/kernel/netlink.md#reading-at-scale). What is left to cut is Python
        work per service: the usual replies are recognised by their headers alone (`runs`),
        and all records decoded at the end, column-wise (`service_table`, `dest_table`).
        """
        self._seq += 1
        seq = self._seq
        runs = Runs()
        request = ipvs.encode_get_services(self.family_id, seq)
        self._dumps([(seq, request)], lambda _: "GET_SERVICE", runs)
        services = decode_service_runs(runs.runs, self._service_layouts)
        keys = [fields.key for fields in services]
        dests = DestTableBuilder()
        try:
            requests = self._dest_requests_of(keys, dests)
            self._dumps(requests, lambda i: f"GET_DEST of {_describe(keys[i])}", dests)
        except LvsprobeError:
            dests.abandon_dump()  # an earlier service's bad record is the first error
            dests.build()
            raise
        table, counts = dests.build()
        return tuple(services_of(services, RealServerRows.split(table, counts)))

    def _dest_requests_of(
        self, keys: list[ServiceKey], into: DestTableBuilder
    ) -> Iterator[tuple[int, bytes]]:
        """(seq, GET_DEST request) of each service in turn, its dump started `into`."""
        if self._dest_requests is None or self._dest_requests.family_id != self.family_id:
            self._dest_requests = ipvs.GetDestRequests(self.family_id)
        encode, start_dump = self._dest_requests.encode, into.start_dump
        seq = self._seq
        for key in keys:
            start_dump(key.family)
            seq = self._seq = seq + 1
            yield seq, encode(seq, key)

    def _dumps(
        self, requests: Iterable[tuple[int, bytes]], what: Callable[[int], str], into: Records
    ) -> None:
        """Each dump request in turn, sent once the one before has ended; the records go
        `into` as runs of bytes, the rest of the replies are handled as `_exchange` does
        (`what(i)` names the i-th dump in errors).

        The usual replies (a datagram of this dump's records, then NLMSG_DONE with no error)
        are recognised by their headers alone; anything else goes message by message."""
        send, recv, add_run = self._transport.send, self._transport.recv, into.add_run
        family_id, checks = self.family_id, self._header_checks
        for index, (seq, request) in enumerate(requests):
            send(request)
            while True:
                datagram = recv()
                if len(datagram) == DONE_SIZE and is_done(datagram, seq):
                    break
                taken = records_run(datagram, family_id, seq, checks)
                if taken is not None:  # the usual datagram: records of this dump only
                    add_run(datagram, *taken)
                elif self._general(datagram, seq, what(index), into):
                    break

    def _general(self, datagram: bytes, seq: int, what: str, into: Records) -> bool:
        """A dump's reply datagram message by message: records kept, others skipped or
        raised on as `_ends_dump` says; True once the dump has ended."""
        where = Where(f"genl IPVS {what} reply")
        offset = 0
        for msg in split_messages(datagram, where):
            at, offset = offset, offset + nla_align(NLMSG_HDR.size + len(msg.payload))
            if msg.seq != seq or msg.msg_type == NlMsgType.NOOP:
                continue
            index = into.dump_records() + 1
            if _ends_dump(msg, what, Where(where.source, index), self.family_id):
                return True
            split_genl(msg.payload, Where(where.source, index))
            into.add_run(datagram, at, 1, NLMSG_HDR.size + len(msg.payload))
        return False

    def daemons(self) -> tuple[Daemon, ...]:
        """The connection-sync daemons: none, master, backup or both (master first)."""
        fid = self.family_id
        replies = self._exchange(lambda s: ipvs.encode_get_daemons(fid, s), "GET_DAEMON", fid)
        return tuple(
            ipvs.decode_daemon(ipvs.top_level(msg.attrs, ipvs.CmdAttr.DAEMON, index=i), index=i)
            for i, msg in enumerate(replies, 1)
        )

    def _exchange(self, build: Callable[[int], bytes], what: str, msg_type: int) -> list[GenlMsg]:
        """Send one request; collect its replies until NLMSG_DONE or the ACK."""
        self._seq += 1
        seq = self._seq
        self._transport.send(build(seq))
        replies: list[GenlMsg] = []
        where = Where(f"genl IPVS {what} reply")
        while True:
            for msg in split_messages(self._transport.recv(), where):
                if msg.seq != seq or msg.msg_type == NlMsgType.NOOP:
                    continue
                index = len(replies) + 1
                at = Where(where.source, index)
                if _ends_dump(msg, what, at, msg_type):
                    return replies
                replies.append(split_genl(msg.payload, at))


def _ends_dump(msg: NlMsg, what: str, at: Where, msg_type: int) -> bool:
    """True for the ACK or NLMSG_DONE ending a request's replies; raises on an error, an
    interrupted dump or a foreign message; False for a record."""
    if msg.msg_type == NlMsgType.ERROR:
        err = parse_error(msg, at)
        if err.errno:
            raise _refused(err.errno, what, err.message)
        return True
    if msg.msg_type == NlMsgType.DONE:
        code = parse_done(msg, at)
        if code:
            raise _refused(code, what, None)
        return True
    if msg.msg_type != msg_type:
        raise ParseError(at.source, at.index, None, f"unexpected message type {msg.msg_type}")
    if msg.flags & NlFlag.DUMP_INTR:
        raise LvsprobeError(f"netlink IPVS {what}: dump interrupted by a change; retry")
    return False


def _describe(key: ServiceKey) -> str:
    """A service the way ipvsadm names it: TCP 10.0.0.1:80, TCP [2001:db8::1]:80, FWM 7."""
    if key.is_fwmark:
        return f"FWM {key.fwmark}"
    protocol = key.protocol.name if key.protocol is not None else "?"
    address = f"[{key.address}]" if key.family is Family.INET6 else str(key.address)
    return f"{protocol} {address}:{key.port}"


def _single(replies: list[GenlMsg], what: str) -> GenlMsg:
    if len(replies) != 1:
        raise ParseError(
            f"genl IPVS {what} reply", None, None, f"expected 1 message, got {len(replies)}"
        )
    return replies[0]
