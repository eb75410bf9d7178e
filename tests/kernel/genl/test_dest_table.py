"""GET_DEST records decoded column-wise (`dest_table`) give exactly what the exact decoder
gives one by one: the same real servers, or the same first error."""

from __future__ import annotations

import dataclasses
import errno
import os
import struct
import subprocess
import sys
import tracemalloc
from array import array
from pathlib import Path
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lvsprobe
from lvsprobe.errors import ParseError
from lvsprobe.kernel.genl import dest_table, ipvs, replies
from lvsprobe.kernel.genl.attrs import (
    NLA_HDR,
    NLMSG_HDR,
    NlFlag,
    NlMsgType,
    encode_attr,
    encode_genl,
    encode_message,
    nla_align,
)
from lvsprobe.kernel.genl.dest_table import DestTableBuilder
from lvsprobe.kernel.genl.runs import MAX_HEADER_CHECKS, records_run
from lvsprobe.kernel.genl.simulated import SimulatedKernel, generated_services
from lvsprobe.kernel.genl.socket import IPVSNetlink
from lvsprobe.kernel.genl.tables import CmdAttr
from lvsprobe.model import Family, RealServer, RealServerRows, Stats

from .test_ipvs_codec import DEST, dests
from .test_layout import mutated

FID = 0x20


def _message(body: bytes) -> bytes:
    return replies.encode_record(FID, CmdAttr.DEST, body, 1, 0)


def _exact(dumps: list[tuple[Family, list[bytes]]]) -> object:
    """What decoding each record one by one gives: the real servers per dump, or the first
    error."""
    out = []
    try:
        for family, messages in dumps:
            rows = []
            for index, message in enumerate(messages, 1):
                nest = ipvs.top_level(message[20:], CmdAttr.DEST, index=index)
                rows.append(ipvs.decode_dest(nest, service_family=family, index=index))
            out.append(tuple(rows))
    except ParseError as exc:
        return ("ParseError", str(exc))
    return out


def _columnar(
    dumps: list[tuple[Family, list[bytes]]], per_datagram: int, flush: int = 1 << 13
) -> object:
    """The same records through `DestTableBuilder`, up to `per_datagram` to a datagram (a
    run is records of one length that follow on), decoded every `flush` records."""
    with (
        patch.object(dest_table, "FLUSH_RECORDS", flush),
        patch.object(dest_table, "COLUMNAR_MIN_RECORDS", 0),
    ):
        try:
            return _columnar_now(dumps, per_datagram)
        except ParseError as exc:  # from a dump's start (the records before decoded) or the end
            return ("ParseError", str(exc))


def _columnar_now(dumps: list[tuple[Family, list[bytes]]], per_datagram: int) -> object:
    builder = DestTableBuilder()
    for family, messages in dumps:
        builder.start_dump(family)
        for first in range(0, len(messages), per_datagram):
            datagram = b"".join(
                m + bytes(nla_align(len(m)) - len(m))
                for m in messages[first : first + per_datagram]
            )
            offset, run_start, run_count, run_length = 0, 0, 0, 0
            for message in messages[first : first + per_datagram]:
                if run_count and len(message) != run_length:
                    builder.add_run(datagram, run_start, run_count, run_length)
                    run_start, run_count = offset, 0
                run_length = len(message)
                run_count += 1
                offset += nla_align(len(message))
            if run_count:
                builder.add_run(datagram, run_start, run_count, run_length)
    table, counts = builder.build()
    return [rows.objects() for rows in RealServerRows.split(table, counts)]


families = st.sampled_from(Family)


@settings(max_examples=200, deadline=None)
@given(
    first=dests(),
    others=st.lists(st.tuples(dests(), st.booleans()), max_size=12),
    dump_families=st.lists(families, min_size=1, max_size=4),
    per_datagram=st.integers(1, 6),
    flush=st.sampled_from([1, 3, 1 << 13]),
    data=st.data(),
)
def test_columnar_decode_is_the_exact_one(
    first: RealServer,
    others: list[tuple[RealServer, bool]],
    dump_families: list[Family],
    per_datagram: int,
    flush: int,
    data: st.DataObject,
) -> None:
    """Records of one layout (the first one's values varied) and of others (IPv6, tunnel
    dests, no stats or no STATS64, no ADDR_FAMILY), some mutated byte-wise, in dumps of
    services of either family: the same result as one by one."""
    bodies = [replies.encode_dest(first)]
    for dest, same_layout in others:
        if same_layout:
            dest = dataclasses.replace(
                first, port=dest.port, weight=dest.weight, active_conns=dest.active_conns
            )
        bodies.append(replies.encode_dest(dest))
    messages = [data.draw(st.one_of(st.just(_message(b)), mutated(_message(b)))) for b in bodies]
    cut = sorted(data.draw(st.lists(st.integers(0, len(messages)), max_size=3)))
    edges = [0, *cut, len(messages)]
    dumps = [
        (dump_families[i % len(dump_families)], messages[edges[i] : edges[i + 1]])
        for i in range(len(edges) - 1)
    ]
    assert _columnar(dumps, per_datagram, flush) == _exact(dumps)


def test_many_records_of_one_layout_with_odd_ones_between() -> None:
    """A big uniform dump (more than one chunk of header checks) with records of another
    layout, an IPv6 one and one without stats among them, in order."""
    messages = []
    for n in range(17_000):
        dest = dataclasses.replace(
            DEST, port=n % 65536, weight=n, stats=Stats(n, n, n, n, 2**40 + n)
        )
        if n % 997 == 5:
            dest = dataclasses.replace(dest, stats=None, rates=None)
        if n % 1999 == 7:
            dest = dataclasses.replace(dest, tunnel=None)
        messages.append(_message(replies.encode_dest(dest)))
    dumps = [(Family.INET, messages[:9_000]), (Family.INET, messages[9_000:])]
    assert _columnar(dumps, 150) == _exact(dumps)


def test_batches_are_joined_without_a_second_copy_of_the_columns() -> None:
    """A read decodes its records in batches; building the table appends the last one to
    the columns grown so far, it does not copy every column again (17 MB at 10^5 rows)."""
    message = _message(replies.encode_dest(DEST))
    datagram = message * 10  # a service's ten real servers
    builder = DestTableBuilder()
    tracemalloc.start()  # before the columns grow: a block grown later is counted whole
    try:
        with patch.object(dest_table, "FLUSH_RECORDS", 200):
            for _ in range(2000):
                builder.start_dump(Family.INET)
                builder.add_run(datagram, 0, 10, len(message))
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        table, counts = builder.build()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(table) == 20_000 and counts == [10] * 2000
    column_lists = [table.address_families, table.address_numbers, table.ports, table.weights]
    column_lists += [*(table.stats or ()), *(table.tunnels or ())]
    columns_size = sum(map(sys.getsizeof, column_lists))
    assert peak - before < columns_size / 2


def test_a_later_batch_of_another_layout_of_the_same_length_is_learned_again() -> None:
    """Batches after the first reuse the layout learned; one whose records have other
    headers at the same length (two u32 attributes swapped) learns theirs."""
    plain = _message(replies.encode_dest(DEST))
    weight = plain.find(bytes.fromhex("08000400"))  # WEIGHT's header
    u_thresh = plain.find(bytes.fromhex("08000500"))  # U_THRESH's header
    assert weight > 0 and u_thresh > 0
    swapped = bytearray(plain)
    swapped[weight : weight + 8], swapped[u_thresh : u_thresh + 8] = (
        plain[u_thresh : u_thresh + 8],
        plain[weight : weight + 8],
    )
    assert len(swapped) == len(plain)
    dumps = [(Family.INET, [plain] * 4), (Family.INET, [bytes(swapped)] * 4)]
    dumps.append((Family.INET, [plain, bytes(swapped)] * 2))
    assert _columnar(dumps, 4, flush=1) == _exact(dumps)


def test_a_read_keeps_its_integer_columns_compact() -> None:
    """A netlink read of a kube-proxy node's shape holds machine integers, not an int
    object per value (the columns were lists of ints: ~3 times the memory, and made
    whether a consumer reads them or not)."""
    read = IPVSNetlink.connect(SimulatedKernel(generated_services(20))).services()
    table = read[0].real_servers.table
    columns = [table.ports, table.weights, table.active_conns, table.inactive_conns]
    columns += [table.persistent_conns, table.upper_thresholds, table.lower_thresholds]
    columns += [*(table.stats or ()), *(table.tunnels or ())]
    assert len(columns) == 20 and len(table) > dest_table.COLUMNAR_MIN_RECORDS
    assert all(isinstance(column, array) for column in columns)


def test_the_header_checks_a_reader_learns_are_bounded() -> None:
    """A datagram of a new shape is checked all the same once the reader knows enough."""
    message = replies.encode_record(FID, CmdAttr.DEST, replies.encode_dest(DEST), 7, 0)
    checks: dict[tuple[int, int], tuple[struct.Struct | None, int]] = {}
    for count in range(1, MAX_HEADER_CHECKS + 20):
        datagram = message * count
        assert records_run(datagram, FID, 7, checks) == (0, count, len(message))
        assert records_run(datagram, FID, 8, checks) is None
    assert len(checks) == MAX_HEADER_CHECKS


def test_a_bad_record_is_reported_as_the_exact_decoder_does() -> None:
    bad = bytearray(_message(replies.encode_dest(DEST)))
    fwd = bad.find(bytes.fromhex("08000300"))  # FWD_METHOD's header
    bad[fwd + 4] = 7  # no such forwarding method
    good = _message(replies.encode_dest(DEST))
    dumps = [(Family.INET, [good, good]), (Family.INET, [good, bytes(bad), good])]
    got = _columnar(dumps, 2)
    assert got == _exact(dumps)
    assert isinstance(got, tuple) and "FWD_METHOD: unknown forwarding method 7" in got[1]


def test_a_netlink_read_gives_the_real_servers_the_kernel_holds() -> None:
    """Through the reader: every optional column, IPv6 and fwmark services, empty ones."""
    services = generated_services(300, seed=11)
    read = IPVSNetlink.connect(SimulatedKernel(services)).services()
    assert [svc.real_servers.objects() for svc in read] == [
        svc.real_servers.objects() for svc in services
    ]
    assert len({id(svc.real_servers.table) for svc in read}) == 1


def test_records_and_done_in_one_datagram() -> None:
    """Kernels that put NLMSG_DONE in the records' skb read the same."""
    services = generated_services(20, seed=5)
    plain = IPVSNetlink.connect(SimulatedKernel(services)).services()

    class Coalescing(SimulatedKernel):
        def recv(self) -> bytes:
            datagram = super().recv()
            if self._queue and NLMSG_HDR.unpack_from(self._queue[0])[1] == NlMsgType.DONE:
                return datagram + self.recv()
            return datagram

    assert IPVSNetlink.connect(Coalescing(services)).services() == plain


@pytest.mark.parametrize("structs", [None, {}], ids=["one by one", "header structs"])
def test_a_run_of_records_may_end_without_its_padding(
    structs: dict[tuple[int, int], struct.Struct] | None,
) -> None:
    body = replies.encode_dest(DEST) + encode_attr(99, b"x")[:5]  # odd-sized, unpadded, last
    nest = NLA_HDR.pack(NLA_HDR.size + len(body), CmdAttr.DEST) + body
    message = encode_message(FID, NlFlag.MULTI, 7, 0, encode_genl(ipvs.IPVSCmd.NEW_DEST, 1, nest))
    assert len(message) % 4
    padded = message + bytes(nla_align(len(message)) - len(message))
    for _ in range(2):  # the second time with the structs learned
        assert records_run(padded + message, FID, 7, structs) == (0, 2, len(message))
        assert records_run(padded + padded, FID, 7, structs) == (0, 2, len(message))
        assert records_run(padded + message[:-1], FID, 7, structs) is None
        assert records_run(padded + message, FID, 8, structs) is None  # another dump's
        assert records_run(padded + replies.encode_done(7, 0), FID, 7, structs) is None


@pytest.mark.parametrize(
    ("flags", "taken"),
    [(NlFlag.MULTI | NlFlag.DUMP_FILTERED, True), (NlFlag.MULTI | NlFlag.DUMP_INTR, False)],
)
def test_records_with_other_flags_are_checked_one_by_one(flags: int, taken: bool) -> None:
    """The header structs take only NLM_F_MULTI; other flags are judged as before."""
    message = replies.encode_record(FID, CmdAttr.DEST, replies.encode_dest(DEST), 7, 0)
    odd = message[:6] + struct.pack("=H", flags) + message[8:]
    structs: dict[tuple[int, int], struct.Struct] = {}
    assert records_run(message + message, FID, 7, structs) == (0, 2, len(message))
    got = records_run(message + odd, FID, 7, structs)
    assert got == ((0, 2, len(message)) if taken else None)


def test_the_simulated_kernel_refuses_a_second_dump_while_one_runs() -> None:
    """Why the reader sends one GET_DEST at a time (as 6.1 and, measured, 6.18 do)."""
    kernel = SimulatedKernel(generated_services(2))
    reader = IPVSNetlink.connect(kernel)
    keys = [svc.key for svc in kernel.services]
    kernel.send(ipvs.encode_get_dests(reader.family_id, 100, keys[0]))
    kernel.send(ipvs.encode_get_dests(reader.family_id, 101, keys[1]))
    records, refused = kernel.recv(), kernel.recv()
    assert NLMSG_HDR.unpack_from(records)[3] == 100
    assert NLMSG_HDR.unpack_from(refused)[1:4:2] == (NlMsgType.ERROR, 101)
    assert struct.unpack_from("=i", refused, NLMSG_HDR.size)[0] == -errno.EBUSY


def test_small_reads_need_no_numpy(nat_proc: Path) -> None:
    """The lab guest's agent reads snapshots with `python -S` (no site-packages, so no
    numpy): a small netlink read and its conn summary must take the exact path."""
    code = (
        "import sys\n"
        "sys.modules['numpy'] = None\n"
        "from pathlib import Path\n"
        "from lvsprobe.sources import Target, read_snapshot\n"
        "from lvsprobe.snapshot_json import snapshot_to_json\n"
        f"root = Path({str(nat_proc)!r})\n"
        "target = Target(procfs_root=root, genl_capture=root.parent / 'genl' / "
        "'ipvs_conversation.hex')\n"
        "snap = read_snapshot(target, conns='summary')\n"
        "assert not snap.failures, snap.failures\n"
        "snapshot_to_json(snap)\n"
        "print(sum(len(s.real_servers) for s in snap.services))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(lvsprobe.__file__).parent.parent)}
    proc = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout) > 0
