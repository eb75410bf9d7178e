"""Sans-IO flows on scripted byte streams: whole, byte by byte, and with hostile replies."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsprobe.replay.flows import (
    BackendMatcher,
    BackendSeen,
    FieldSet,
    Finished,
    HeartbeatDone,
    RequestDone,
    Step,
    TcpFlow,
    UdpFlow,
)
from lvsprobe.replay.ftpflow import FtpFlow, ListenData, OpenData
from lvsprobe.replay.httpflow import HttpFlow
from lvsprobe.replay.httphead import HeadReader, read_head
from lvsprobe.replay.scenario import DEFAULT_BACKEND_PATTERN


def _matcher() -> BackendMatcher:
    return BackendMatcher(DEFAULT_BACKEND_PATTERN)


def _feed(flow: Any, chunks: list[bytes]) -> list[Any]:
    events: list[Any] = list(flow.start(0.0).events)
    for chunk in chunks:
        step: Step = flow.receive(chunk, 1.0)
        events += step.events
        if step.done:
            break
    return events


def _finished(events: list[Any]) -> Finished:
    return next(e for e in events if isinstance(e, Finished))


RESPONSE = b"HTTP/1.1 200 OK\r\nX-Backend: rs2\r\nContent-Length: 12\r\n\r\nrs2 1.2.3.4\n"


@pytest.mark.parametrize("split", ["whole", "bytes"])
def test_http_response_whole_and_byte_by_byte(split: str) -> None:
    chunks = [RESPONSE] if split == "whole" else [RESPONSE[i : i + 1] for i in range(len(RESPONSE))]
    events = _feed(HttpFlow(_matcher(), "vip", "/"), chunks)
    assert BackendSeen("rs2") in events
    assert _finished(events) == Finished("ok")
    assert sum(isinstance(e, RequestDone) for e in events) == 1


def test_http_keepalive_pipeline_and_server_close() -> None:
    flow = HttpFlow(_matcher(), "vip", "/", requests=3, keepalive=True)
    first = flow.start(0.0)
    assert b"Connection: keep-alive" in first.send
    second = flow.receive(RESPONSE, 0.1)
    assert second.send.startswith(b"GET / HTTP/1.1")
    third = flow.receive(RESPONSE, 0.2)
    assert b"Connection: close" in third.send
    assert _finished(flow.receive(RESPONSE, 0.3).events) == Finished("ok")
    cut = HttpFlow(_matcher(), "vip", "/", requests=3, keepalive=True)
    cut.start(0.0)
    assert _finished(cut.receive(RESPONSE + b"", 0.1).events + cut.receive(b"", 0.2).events)


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        (b"garbage\r\n\r\n", "error:http-bad-status-line"),
        (b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n", "error:http-503"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nshort", "error:http-short-body"),
        (b"HTTP/1.1 200 OK\r\nX-Ba", "error:http-eof-in-header"),
    ],
)
def test_http_hostile_replies(reply: bytes, outcome: str) -> None:
    events = _feed(HttpFlow(_matcher(), "vip", "/"), [reply, b""])
    assert _finished(events).outcome == outcome


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_http_fuzz_never_raises(chunks: list[bytes]) -> None:
    _feed(HttpFlow(_matcher(), "vip", "/"), [*chunks, b""])


def test_tcp_heartbeats_timer_driven() -> None:
    flow = TcpFlow(_matcher(), 5, 40, hold_s=0.3, heartbeat_s=0.1, heartbeat_timeout_s=1.0)
    step = flow.start(0.0)
    assert step.send == b"hb 5 1\n" and step.wake_at == pytest.approx(0.1)
    assert BackendSeen("rs1") in flow.receive(b"rs1\nhb 5 1\n", 0.01).events
    assert flow.timer(0.1).send == b"hb 5 2\n"
    # beats keep their cadence while an answer is late
    assert flow.timer(0.2).send == b"hb 5 3\n"
    events = flow.receive(b"hb 5 2\nhb 5 3\n", 0.25).events
    assert events.count(HeartbeatDone()) == 2
    closing = flow.timer(0.31)
    assert closing.half_close and closing.send.startswith(b"lvsprobe flow 5")
    assert _finished(flow.receive(b"", 0.4).events) == Finished("ok")


def test_tcp_late_heartbeat_is_timeout_and_eof_is_reset() -> None:
    flow = TcpFlow(_matcher(), 1, 10, hold_s=5.0, heartbeat_s=0.1, heartbeat_timeout_s=0.5)
    flow.start(0.0)
    for tick in (0.1, 0.2, 0.3, 0.4):
        assert not flow.timer(tick).done
    assert _finished(flow.timer(0.5).events).detail == "heartbeat 1 unanswered"
    flow = TcpFlow(_matcher(), 1, 10, hold_s=1.0, heartbeat_s=0.1)
    flow.start(0.0)
    assert _finished(flow.receive(b"", 0.05).events).outcome == "reset"


def test_udp_counts_replies_and_times_out() -> None:
    flow = UdpFlow(_matcher(), 2, 32, requests=2, reply_timeout_s=1.0)
    assert len(flow.start(0.0).send) == 32
    assert flow.receive(b"rs3 x", 0.1).send
    assert _finished(flow.receive(b"rs3 y", 0.2).events) == Finished("ok")
    lost = UdpFlow(_matcher(), 2, 32)
    lost.start(0.0)
    assert _finished(lost.timer(2.0).events).outcome == "timeout"


FTP_SERVER = [
    b"220-rs1 welcome\r\n220-second line\r\n220 ready\r\n",
    b"331 Please specify the password.\r\n",
    b"230 Login successful.\r\n",
    b"200 Switching to Binary mode.\r\n",
    b"213 5\r\n",
    b"227 Entering Passive Mode (198,18,1,100,117,48).\r\n",
    b"150 Here comes the directory listing.\r\n226 Directory send OK.\r\n",
    b"227 Entering Passive Mode (198,18,1,100,117,49).\r\n",
    b"150 Opening BINARY mode data connection.\r\n226 Transfer complete.\r\n",
    b"221 Goodbye.\r\n",
]


def test_ftp_passive_dialogue_scripted() -> None:
    import hashlib

    flow = FtpFlow(
        _matcher(),
        True,
        "anonymous",
        "x@",
        "hello.txt",
        sha256={"rs1": hashlib.sha256(b"hello").hexdigest()},
    )
    sent: list[bytes] = []
    events: list[Any] = []
    flow.start(0.0)
    for n, reply in enumerate(FTP_SERVER):
        step = flow.receive(reply, float(n))
        sent.append(step.send)
        events += step.events
        if any(isinstance(e, OpenData) for e in step.events):
            data = (
                b"-rw 1 hello.txt\r\n"
                if len([e for e in events if isinstance(e, OpenData)]) == 1
                else b"hello"
            )
            events += flow.data_received(data, n + 0.5).events
            events += flow.data_received(b"", n + 0.6).events
    assert sent[:5] == [
        b"USER anonymous\r\n",
        b"PASS x@\r\n",
        b"TYPE I\r\n",
        b"SIZE hello.txt\r\n",
        b"PASV\r\n",
    ]
    assert OpenData("198.18.1.100", 117 * 256 + 48) in events
    assert FieldSet("ftp_checksum_ok", True) in events
    assert _finished(events) == Finished("ok")


def test_ftp_active_asks_driver_to_listen() -> None:
    flow = FtpFlow(_matcher(), False, "anonymous", "x@", "f")
    flow.start(0.0)
    for reply in FTP_SERVER[:4]:
        step = flow.receive(reply, 0.0)
    step = flow.receive(b"213 5\r\n", 0.0)
    assert ListenData() in step.events
    port = flow.data_listening("198.18.16.1", 40001, 0.1)
    assert port.send == b"PORT 198,18,16,1,156,65\r\n"


@pytest.mark.parametrize("reply", [b"530 Login incorrect.\r\n", b"garbage\r\n", b""])
def test_ftp_hostile_replies(reply: bytes) -> None:
    flow = FtpFlow(_matcher(), True, "u", "p", "f")
    flow.start(0.0)
    flow.receive(FTP_SERVER[0], 0.0)
    step = flow.receive(reply, 0.1)
    if reply:
        step = flow.receive(reply, 0.1) if not step.done else step
    assert step.done and _finished(step.events).outcome in (
        "error:ftp-530",
        "error:ftp-000",
        "reset",
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=10))
def test_ftp_fuzz_never_raises(chunks: list[bytes]) -> None:
    flow = FtpFlow(_matcher(), True, "u", "p", "f")
    _feed(flow, [*chunks, b""])


def test_syn_segment_checksums_verify_with_scapy() -> None:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6

    from lvsprobe.replay.synflow import syn_segment

    for src, dst, layer in (
        ("198.18.16.1", "198.18.1.100", IP),
        ("2001:2:0:100::1", "2001:2:0:1::100", IPv6),
    ):
        segment = syn_segment(src, dst, 80, 40000, 12345)
        packet = layer(src=src, dst=dst) / TCP(segment)
        tcp = packet[TCP]
        sent = tcp.chksum
        del tcp.chksum
        assert layer(bytes(packet))[TCP].chksum == sent
        assert (tcp.sport, tcp.dport, tcp.seq, str(tcp.flags)) == (40000, 80, 12345, "S")


def test_syn_header_is_byte_for_byte_scapys() -> None:
    from scapy.layers.inet import TCP

    from lvsprobe.replay.synflow import SYN_MSS, SYN_WINDOW, syn_header

    for dport in (80, 443, 9999):
        built = TCP(sport=0, dport=dport, flags="S", seq=0, window=SYN_WINDOW,
                    options=[("MSS", SYN_MSS)])  # fmt: skip
        expected = bytearray(bytes(built))
        expected[16:18] = b"\0\0"  # the checksum is filled in per segment
        assert syn_header(dport) == bytes(expected)


def test_syn_source_ports_are_distinct_per_flow_and_in_range() -> None:
    from lvsprobe.replay.synflow import PORT_SPAN, syn_source_port

    for seed in (0, 1, 99):
        ports = [syn_source_port(seed, flow_id) for flow_id in range(PORT_SPAN)]
        assert len(set(ports)) == PORT_SPAN
        assert min(ports) >= 32768 and max(ports) <= 60999


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Backend: rs1\r\n\r\n"
    b"4\r\nrs1 \r\n6;ext=1\r\nclient\r\n0\r\n\r\n"
)


@pytest.mark.parametrize("split", ["whole", "bytes"])
def test_http_chunked_keepalive(split: str) -> None:
    flow = HttpFlow(_matcher(), "vip", "/", requests=2, keepalive=True)
    flow.start(0.0)
    chunks = [CHUNKED] if split == "whole" else [CHUNKED[i : i + 1] for i in range(len(CHUNKED))]
    sends = [flow.receive(c, 0.1).send for c in chunks]
    assert sends[-1].startswith(b"GET /")  # the first response ended exactly at its 0-chunk
    events = flow.receive(CHUNKED.replace(b"0\r\n\r\n", b"0\r\nX-T: 1\r\n\r\n"), 0.2).events
    assert _finished(events) == Finished("ok")


def test_http_bad_chunk_and_no_body_statuses() -> None:
    bad = CHUNKED.replace(b"4\r\n", b"zz\r\n")
    assert _finished(_feed(HttpFlow(_matcher(), "v", "/"), [bad])).outcome == "error:http-bad-chunk"
    flow = HttpFlow(_matcher(), "v", "/", requests=2, keepalive=True)
    flow.start(0.0)
    assert flow.receive(b"HTTP/1.1 204 No Content\r\n\r\n", 0.1).send.startswith(b"GET")


# pieces that make and break the default pattern's matches: its header, words `rsN` in any
# case, word characters (latin-1 letters too) and line ends around them
PIECES = [
    *(b"rs", b"RS", b"rS", b"Rs", b"rs1", b"RS42", b"x-backend:", b"X-Backend: ", b"x-backend:\t"),
    *(b" ", b"\t", b"\r\n", b"\n", b"0", b"17", b"a", b"_", b"-"),
    *(b"\xe9", b"\xb5", b"\xaa", b"\xff", b"\xd7", b"HTTP/1.1 200 OK\r\n", b"Server: nginx\r\n"),
]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from(PIECES), max_size=12).map(b"".join), max_size=6),
    st.integers(1, 96),
)
def test_the_default_patterns_fast_search_names_what_the_pattern_does(
    chunks: list[bytes], window: int
) -> None:
    """The default pattern is searched by a fast path (the leftmost word `rsN`); the same
    pattern spelled otherwise goes through `re` and must name the same backend, chunk by chunk."""
    fast = BackendMatcher(DEFAULT_BACKEND_PATTERN, window)
    exact = BackendMatcher(DEFAULT_BACKEND_PATTERN.replace("(?im)", "(?mi)"), window)
    for chunk in chunks:
        assert fast.feed(chunk) == exact.feed(chunk)
    assert fast.name == exact.name


def _head_as_text(buffer: bytes) -> tuple[Any, ...] | None:
    """The exact reading of a response head: decoded as latin-1, every line split and
    stripped as text (what HttpFlow did before it read heads as bytes). ValueError where
    int() refuses what str.isdigit() took."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buffer[:end].decode("latin-1").split("\r\n")
    parts = head[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return ("error:http-bad-status-line", head[0][:80])
    status, want, chunked = int(parts[1]), -1, False
    for line in head[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        if name == "content-length" and value.isdigit():
            want = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if status in (204, 304) or 100 <= status < 200:
        want = 0
    return status, want, chunked, end + 4


def _head_as_bytes(buffer: bytes) -> tuple[Any, ...] | None:
    flow = HttpFlow(_matcher(), "vip", "/")
    flow._buffer = buffer
    bad = flow._parse_head()
    if bad is not None:
        return (bad.outcome, bad.detail)
    if flow._want is None:
        return None
    return flow._status, flow._want, flow._chunked, flow._head_len


STATUS_PIECES = [b"HTTP/1.1", b"HTTP/1.0", b"garbage", b" ", b"200", b"204", b"1", b"OK", b"\xb2"]
HEADER_PIECES = [
    *(b"Content-Length", b"content-LENGTH", b"Transfer-Encoding", b"transfer-encoding"),
    *(b"X-Content-Length", b"Server", b":", b" ", b"\t", b"\xa0", b"\x85", b"\x1c", b"\xc0"),
    *(b"12", b"0", b"3", b"\xb2", b"\xb9", b"chunked", b"CHUNKED", b"gzip, ", b"\r", b"\n"),
]


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.sampled_from(STATUS_PIECES), max_size=6).map(b"".join),
    st.lists(st.lists(st.sampled_from(HEADER_PIECES), max_size=8).map(b"".join), max_size=5),
    st.booleans(),
)
def test_the_head_read_as_bytes_is_the_head_read_as_text(
    status: bytes, headers: list[bytes], complete: bool
) -> None:
    buffer = b"\r\n".join([status, *headers]) + (b"\r\n\r\nbody" if complete else b"\r\n")
    try:
        exact = _head_as_text(buffer)
    except ValueError:  # a superscript digit: the text reading raised, see the next test
        _head_as_bytes(buffer)
        return
    assert _head_as_bytes(buffer) == exact


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        # regression: str.isdigit() takes superscript digits and int() refuses them, so a
        # reply naming one raised ValueError out of the flow and ended the whole run
        (b"HTTP/1.1 \xb200 OK\r\nContent-Length: 0\r\n\r\n", "error:http-bad-status-line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nbody", "ok"),  # no length: to EOF
        # regression: int() refuses more than 4300 digits (ValueError again)
        (b"HTTP/1.1 " + b"2" * 5000 + b" OK\r\n\r\n", "error:http-bad-status-line"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\nbody",
            "error:http-short-body",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 19 + b"\r\n\r\nbody",
            "error:http-short-body",
        ),
    ],
)
def test_http_numbers_int_refuses_end_the_flow_not_the_run(reply: bytes, outcome: str) -> None:
    flow = HttpFlow(_matcher(), "vip", "/")
    assert _finished(_feed(flow, [reply, b""])).outcome == outcome


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from(STATUS_PIECES + HEADER_PIECES), max_size=8).map(b"".join),
        max_size=200,
    )
)
def test_a_run_reads_each_head_as_read_head_does(heads: list[bytes]) -> None:
    """The run's HeadReader gives what read_head gives, whatever it has kept (never more
    than its limit), and so does a flow reading its replies through it."""
    reader = HeadReader()
    for head in heads:
        assert reader(head) == read_head(head)
        assert len(reader._read) <= HeadReader.LIMIT
    for head in heads[:20]:
        reply = head + b"\r\n\r\nbody"
        alone = HttpFlow(_matcher(), "vip", "/")
        shared = HttpFlow(_matcher(), "vip", "/", heads=reader)
        assert _feed(shared, [reply, b""]) == _feed(alone, [reply, b""])


def test_record_events_fill_the_record_and_give_back_the_outcome() -> None:
    from lvsprobe.replay.driver import record_events
    from lvsprobe.replay.flowrecord import FlowRecord
    from lvsprobe.replay.flows import FIRST_BYTE, REQUEST_DONE

    rec = FlowRecord(1, "http", "127.0.0.2", None, "127.0.0.1", 80, "tcp", 1.0, 1.5, 0.0)
    events = [FIRST_BYTE, BackendSeen("rs2"), REQUEST_DONE, Finished("reset", "x"),
              HeartbeatDone(), FieldSet("tls_version", "TLSv1.3"), BackendSeen("rs3"),
              FIRST_BYTE, Finished("ok")]  # fmt: skip
    assert record_events(rec, events, 2.0) == Finished("reset", "x")
    got = (rec.ttfb_s, rec.backend, rec.requests, rec.heartbeats, rec.tls_version)
    assert got == (0.5, "rs2", 1, 1, "TLSv1.3")
    assert record_events(rec, [REQUEST_DONE], 3.0) is None and rec.requests == 2
