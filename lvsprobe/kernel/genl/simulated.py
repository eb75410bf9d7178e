"""`SimulatedKernel`: a Transport that answers IPVS requests the way a 6.1 kernel frames them.

The benchmarks and the scale tests need dumps of 10^4–10^5 real servers without loading
ip_vs on this host. The framing follows net/netlink/af_netlink.c (6.1): a dump fills one skb
per netlink_dump() call (the first NLMSG_GOODSIZE, later up to the size the reader's
buffers showed, at most ~32 KiB), the dump callback returns skb->len while it adds records,
so NLMSG_DONE always comes in a skb of its own, made when the reader takes the last
records; and a dump request on a socket whose dump has not ended yet gets EBUSY (one dump
per socket at a time). Record bodies come from `replies`.
"""

from __future__ import annotations

import errno
import random
import struct
from collections import deque
from collections.abc import Iterable, Sequence

from lvsprobe.kernel.genl import replies
from lvsprobe.kernel.genl.attrs import (
    BINARY,
    NLMSG_HDR,
    U16,
    Attrs,
    GenlMsg,
    NlFlag,
    Where,
    encode_attr,
    encode_genl,
    encode_message,
    split_genl,
)
from lvsprobe.kernel.genl.tables import GENL_ID_CTRL, CmdAttr, CtrlAttr, CtrlCmd, IPVSCmd
from lvsprobe.model import (
    Family,
    Forward,
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
    address_object,
)

FAMILY_ID = 0x20
# SKB_WITH_OVERHEAD(PAGE_SIZE) and SKB_WITH_OVERHEAD(32768) on x86_64 (6.1).
FIRST_SKB_BYTES = 3776
MAX_SKB_BYTES = 32448


class SimulatedKernel:
    """IPVS of one namespace: `services` (with their real servers), answered as the kernel
    would. Each service's records are encoded once (a benchmark reads them many times)."""

    def __init__(
        self,
        services: Sequence[Service],
        *,
        version: str = "1.2.1",
        conn_tab_size: int = 4096,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.services = tuple(services)
        self._service_messages = _messages(
            CmdAttr.SERVICE, map(replies.encode_service, self.services)
        )
        self._dest_messages = {
            replies.encode_service_key(svc.key): _messages(
                CmdAttr.DEST, map(replies.encode_dest, tuple(svc.real_servers))
            )
            for svc in self.services
        }
        self._info = replies.encode_info(version, conn_tab_size)
        self._config = replies.encode_config(timeouts or Timeouts(900, 120, 300))
        self._queue: deque[bytes] = deque()
        self._dump: deque[bytes] | None = None  # the skbs of the running dump
        # Each dump's skbs by (what was dumped, the first skb's size), cut around their
        # messages' sequence numbers (a benchmark measures the reader, not this).
        self._cut_skbs: dict[tuple[bytes, int], list[list[bytes]]] = {}
        self._dump_header: tuple[int, int] = (0, 0)  # seq, port id
        self._skb_bytes = FIRST_SKB_BYTES
        self.sent = 0
        self.received = 0

    # --- Transport ---------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.sent += 1
        offset = 0
        while offset < len(data):  # several requests may share a datagram
            length, msg_type, flags, seq, port_id = NLMSG_HDR.unpack_from(data, offset)
            request = data[offset : offset + length]
            offset += (length + 3) & ~3
            self._answer(request, msg_type, flags, seq, port_id)

    def recv(self) -> bytes:
        if not self._queue:
            raise AssertionError("the reader waits for a reply that never comes")
        self.received += 1
        datagram = self._queue.popleft()
        # netlink_recvmsg: a buffer this big lets later dump skbs grow; then the dump goes on.
        self._skb_bytes = MAX_SKB_BYTES
        if self._dump is not None:
            self._continue_dump()
        return datagram

    def close(self) -> None:
        self._queue.clear()

    # --- the kernel side ----------------------------------------------------------------

    def _answer(self, request: bytes, msg_type: int, flags: int, seq: int, port_id: int) -> None:
        body = split_genl(request[NLMSG_HDR.size :], Where("simulated request"))
        if msg_type == GENL_ID_CTRL:
            self._reply_ctrl(request, body, seq, port_id)
            return
        if flags & NlFlag.DUMP:
            if self._dump is not None:
                self._queue.append(replies.encode_ack(request, errno.EBUSY))
                return
            self._start_dump(request, body, seq, port_id)
            return
        if body.cmd == IPVSCmd.GET_INFO:
            reply = replies.encode_reply(
                FAMILY_ID, IPVSCmd.SET_INFO, self._info, seq, port_id, multi=False
            )
        elif body.cmd == IPVSCmd.GET_CONFIG:
            reply = replies.encode_reply(
                FAMILY_ID, IPVSCmd.SET_CONFIG, self._config, seq, port_id, multi=False
            )
        else:
            self._queue.append(replies.encode_ack(request, errno.EOPNOTSUPP))
            return
        self._queue.extend((reply, replies.encode_ack(request)))

    def _reply_ctrl(self, request: bytes, body: GenlMsg, seq: int, port_id: int) -> None:
        if body.cmd != CtrlCmd.GETFAMILY:
            self._queue.append(replies.encode_ack(request, errno.EOPNOTSUPP))
            return
        attrs = encode_attr(CtrlAttr.FAMILY_ID, U16.encode(FAMILY_ID))
        reply = encode_message(
            GENL_ID_CTRL, 0, seq, port_id, encode_genl(CtrlCmd.NEWFAMILY, 2, attrs)
        )
        self._queue.extend((reply, replies.encode_ack(request)))

    def _start_dump(self, request: bytes, body: GenlMsg, seq: int, port_id: int) -> None:
        if body.cmd == IPVSCmd.GET_SERVICE:
            what, messages = b"", self._service_messages
        elif body.cmd == IPVSCmd.GET_DEST:
            top = Attrs(body.attrs, Where("simulated GET_DEST"), CmdAttr)
            what = top.need(CmdAttr.SERVICE, BINARY)
            messages = self._dest_messages.get(what, [])
        elif body.cmd == IPVSCmd.GET_DAEMON:
            what, messages = b"daemons", []
        else:
            self._queue.append(replies.encode_ack(request, errno.EOPNOTSUPP))
            return
        cut = self._cut_skbs.get((what, self._skb_bytes))
        if cut is None:
            cut = [_cut_at_seq(skb) for skb in _skbs(messages, self._skb_bytes)]
            self._cut_skbs[what, self._skb_bytes] = cut
        seq_bytes = struct.pack("=I", seq)
        self._dump = deque(seq_bytes.join(pieces) for pieces in cut)
        self._dump_header = (seq, port_id)
        self._continue_dump()

    def _continue_dump(self) -> None:
        """One netlink_dump(): the next skb of records, or (none left) NLMSG_DONE."""
        assert self._dump is not None
        if self._dump:
            self._queue.append(self._dump.popleft())
            return
        seq, port_id = self._dump_header
        self._queue.append(replies.encode_done(seq, port_id))
        self._dump = None


def _messages(record: CmdAttr, bodies: Iterable[bytes]) -> list[bytes]:
    """Dump messages (sequence number 0: set per dump) of these record bodies."""
    return [replies.encode_record(FAMILY_ID, record, body, 0, 0) for body in bodies]


def _skbs(messages: list[bytes], first_bytes: int) -> list[bytes]:
    """Messages packed into skbs as netlink_dump() fills them: whole records, the first skb
    at most `first_bytes`, the others at most MAX_SKB_BYTES."""
    out: list[bytes] = []
    skb: list[bytes] = []
    size, limit = 0, first_bytes
    for message in messages:
        if skb and size + len(message) > limit:
            out.append(b"".join(skb))
            skb, size, limit = [], 0, MAX_SKB_BYTES
        skb.append(message)
        size += len(message)
    if skb:
        out.append(b"".join(skb))
    return out


def _cut_at_seq(skb: bytes) -> list[bytes]:
    """The skb cut around each message's sequence number: joined by the bytes of one, it is
    the skb of that dump."""
    pieces = []
    offset = start = 0
    while offset < len(skb):
        length = NLMSG_HDR.unpack_from(skb, offset)[0]
        pieces.append(skb[start : offset + 8])
        start = offset + 12
        offset += (length + 3) & ~3
    pieces.append(skb[start:])
    return pieces


def generated_services(count: int, *, backends: int = 10, seed: int | None = None) -> list[Service]:
    """`count` services for a `SimulatedKernel`.

    Without `seed`: a kube-proxy node's shape, TCP IPv4 services of `backends` real servers
    each with every attribute 6.1 sends (the benchmarks). With one: a varied mix, IPv6 and
    fwmark services, empty ones, real servers without thresholds, counters, tunnel or
    ADDR_FAMILY (older kernels), so that readers meet every optional column.
    """
    rnd = random.Random(0 if seed is None else seed)  # the kube shape's tunnels: the same each run
    varied = seed is not None
    out = []
    for i in range(count):
        family = Family.INET6 if varied and rnd.random() < 0.2 else Family.INET
        base = 0x20010DB8 << 96 if family is Family.INET6 else 0x0A000000
        if varied and rnd.random() < 0.1:
            key = ServiceKey(family, None, None, 0, fwmark=i + 1)
        else:
            address = address_object(family, base + 1 + i // 100)
            key = ServiceKey(family, Protocol.TCP, address, 1000 + i % 100)
        size = rnd.choice([0, 1, 3, 10]) if varied else backends
        rss = tuple(_generated_dest(rnd, family, i * backends + j, varied) for j in range(size))
        stats = Stats(i, 10 * i, 9 * i, 6400 * i, 90000 * i)
        out.append(
            Service(
                key,
                "wlc",
                ServiceFlag.HASHED,
                None,
                RealServerRows.of(rss),
                stats,
                Rates(1, 2, 3, 4, 5),
            )
        )
    return out


def _generated_dest(rnd: random.Random, family: Family, n: int, varied: bool) -> RealServer:
    def maybe(value: int) -> int | None:
        return None if varied and rnd.random() < 0.1 else value

    base = 0x20010DB8_00000001 << 64 if family is Family.INET6 else 0xAC100000
    has_stats = not varied or rnd.random() < 0.9
    return RealServer(
        address=address_object(family, base + n),
        port=8000 + n % 1000,
        forward=rnd.choice(list(Forward)) if varied else Forward.MASQ,
        weight=1 + n % 3,
        active_conns=n % 7,
        inactive_conns=n * 13 % 100_000,
        persistent_conns=maybe(n % 5),
        upper_threshold=maybe(0),
        lower_threshold=maybe(0),
        stats=Stats(n, 10 * n, 9 * n, 6400 * n + 2**33, 90000 * n) if has_stats else None,
        rates=Rates(n % 9, 2 * n % 99, 3, 400 * n % 9999, 5) if has_stats else None,
        family=None if varied and rnd.random() < 0.05 else family,
        tunnel=Tunnel(rnd.randrange(3), rnd.randrange(65536), 1) if maybe(1) else None,
    )
