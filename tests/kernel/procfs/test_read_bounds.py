"""Hostile /proc trees at the reading edge: only regular files are read, never past their limit,
and a chunked read stops at its deadline or when closed."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsprobe.deadline import Deadline
from lvsprobe.errors import DeadlineExceeded, ParseError
from lvsprobe.kernel.procfs import (
    _read,
    ip_vs,
    ip_vs_conn,
    ip_vs_conn_sync,
    ip_vs_stats,
    ip_vs_stats_percpu,
    limits,
    slab,
    sysctl,
)

pytestmark = pytest.mark.timeout(30)  # a FIFO read that blocks must fail, not hang the run

# Every reader of a /proc file, with the file it reads.
READERS: dict[str, tuple[str, Callable[[Path], Any]]] = {
    "ip_vs": ("net/ip_vs", ip_vs.read_ip_vs),
    "ip_vs_stats": ("net/ip_vs_stats", ip_vs_stats.read_ip_vs_stats),
    "ip_vs_stats_percpu": ("net/ip_vs_stats_percpu", ip_vs_stats_percpu.read_ip_vs_stats_percpu),
    "ip_vs_conn": ("net/ip_vs_conn", ip_vs_conn.read_ip_vs_conn),
    "ip_vs_conn stream": ("net/ip_vs_conn", lambda r: list(ip_vs_conn.stream_ip_vs_conn(r))),
    "ip_vs_conn_sync": ("net/ip_vs_conn_sync", ip_vs_conn_sync.read_ip_vs_conn_sync),
    "ip_vs_conn_sync stream": (
        "net/ip_vs_conn_sync",
        lambda r: list(ip_vs_conn_sync.stream_ip_vs_conn_sync(r)),
    ),
    "sysctl": ("sys/net/ipv4/vs/amemthresh", sysctl.read_sysctls),
    "slabinfo": ("slabinfo", lambda r: slab.read_slab(r, None)),
}


@pytest.fixture
def tree(tmp_path: Path, nat_proc: Path) -> Path:
    root = tmp_path / "proc"
    shutil.copytree(nat_proc, root)
    return root


@pytest.fixture(scope="module")
def unix_socket() -> Iterator[Path]:
    """A bound AF_UNIX socket at a short path (sun_path holds 108 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="lvs", dir="/tmp"))
    path = directory / "s"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    yield path
    sock.close()
    shutil.rmtree(directory)


def _sparse(path: Path, size: int) -> None:
    """A file of `size` bytes of holes: costs no disk."""
    with path.open("ab") as f:
        f.truncate(size)


def _replace(path: Path, make: Callable[[Path], None]) -> None:
    path.unlink()
    make(path)


KINDS: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "symlink to /dev/zero": (lambda p, s: p.symlink_to("/dev/zero"), "a character device"),
    "symlink to /dev/urandom": (lambda p, s: p.symlink_to("/dev/urandom"), "a character device"),
    "FIFO": (lambda p, s: os.mkfifo(p), "a FIFO"),
    "directory": (lambda p, s: p.mkdir(), "a directory"),
    "socket": (lambda p, s: p.symlink_to(s), "a socket"),
}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("reader", list(READERS))
def test_only_regular_files_are_read(tree: Path, unix_socket: Path, reader: str, kind: str) -> None:
    name, read = READERS[reader]
    make, described = KINDS[kind]
    _replace(tree / name, lambda p: make(p, unix_socket))
    with pytest.raises(ParseError) as info:
        read(tree)
    assert str(tree / name) in str(info.value)
    assert f"is {described}, not a regular file" in str(info.value)


def test_a_fifo_with_a_writer_waiting_is_still_refused(tree: Path) -> None:
    """O_NONBLOCK opens the FIFO without waiting; the check refuses it before any read."""
    path = tree / "net/ip_vs_stats"
    _replace(path, os.mkfifo)
    with pytest.raises(ParseError, match="is a FIFO"):
        ip_vs_stats.read_ip_vs_stats(tree)


SMALL_LIMITS = {
    "net/ip_vs_stats": (ip_vs_stats.read_ip_vs_stats, limits.IP_VS_STATS_MAX_BYTES),
    "net/ip_vs_stats_percpu": (
        ip_vs_stats_percpu.read_ip_vs_stats_percpu,
        limits.IP_VS_STATS_PERCPU_MAX_BYTES,
    ),
    "sys/net/ipv4/vs/amemthresh": (sysctl.read_sysctls, limits.SYSCTL_MAX_BYTES),
    "slabinfo": (lambda r: slab.read_slab(r, None), limits.SLABINFO_MAX_BYTES),
}


@pytest.mark.parametrize("name", list(SMALL_LIMITS))
def test_a_huge_sparse_file_is_refused_reading_no_more_than_its_limit(
    tree: Path, name: str
) -> None:
    read, limit = SMALL_LIMITS[name]
    _sparse(tree / name, 50 << 30)
    tracemalloc.start()
    try:
        with pytest.raises(ParseError, match=f"is larger than {limit} bytes") as info:
            read(tree)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "more than the kernel writes" in str(info.value)
    assert peak < 3 * limit + (1 << 20), f"peak {peak} bytes to refuse a {limit}-byte limit"


def test_a_single_line_of_50m_integers_is_refused_at_the_sysctl_limit(tree: Path) -> None:
    # The finding: `export --once` spent 140 s and 5.9 GB on such a file. One line, no newline.
    path = tree / "sys/net/ipv4/vs/amemthresh"
    with path.open("wb") as f:
        f.write(b"1 " * (limits.SYSCTL_MAX_BYTES // 2 + 1))
    with pytest.raises(ParseError, match=r"amemthresh.*larger than 65536 bytes"):
        sysctl.read_sysctls(tree)


def test_ip_vs_limit(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ip_vs, "IP_VS_MAX_BYTES", 512)
    with pytest.raises(ParseError, match=r"net/ip_vs is larger than 512 bytes"):
        ip_vs.read_ip_vs(tree)  # the fixture is 1005 bytes


@pytest.mark.parametrize("stream", [False, True])
def test_conn_table_limit_names_the_option(tree: Path, stream: bool) -> None:
    size = (tree / "net/ip_vs_conn").stat().st_size
    if stream:
        with pytest.raises(ParseError) as info:
            list(ip_vs_conn.stream_ip_vs_conn(tree, max_bytes=size - 1))
        assert (
            b"".join(ip_vs_conn.stream_ip_vs_conn(tree, max_bytes=size))
            == (tree / "net/ip_vs_conn").read_bytes()
        )
    else:
        with pytest.raises(ParseError) as info:
            ip_vs_conn.read_ip_vs_conn(tree, max_bytes=size - 1)
        assert len(ip_vs_conn.read_ip_vs_conn(tree, max_bytes=size)) == size
    assert f"larger than {size - 1} bytes: raise the limit with --max-conn-table-bytes" in str(
        info.value
    )


@settings(max_examples=60, deadline=None)
@given(
    content=st.binary(max_size=3000),
    max_bytes=st.integers(min_value=1, max_value=3000),
    first_read=st.integers(min_value=1, max_value=70),
)
def test_whole_reads_return_the_file_or_refuse_it(
    content: bytes, max_bytes: int, first_read: int
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "f").write_bytes(content)
        # a small first buffer makes the read grow it, as it does for procfs files (size 0)
        saved, _read._FIRST_READ = _read._FIRST_READ, first_read
        try:
            if len(content) <= max_bytes:
                got = _read.read_proc_bytes(Path(directory), "f", max_bytes=max_bytes)
                assert got == content
            else:
                with pytest.raises(ParseError, match="is larger than"):
                    _read.read_proc_bytes(Path(directory), "f", max_bytes=max_bytes)
        finally:
            _read._FIRST_READ = saved


@settings(max_examples=60, deadline=None)
@given(
    content=st.binary(max_size=3000),
    max_bytes=st.integers(min_value=1, max_value=3000),
    size=st.integers(min_value=1, max_value=700),
)
def test_chunked_reads_return_the_file_or_refuse_it(
    content: bytes, max_bytes: int, size: int
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "f").write_bytes(content)
        chunks = _read.read_proc_chunks(Path(directory), "f", max_bytes=max_bytes, size=size)
        if len(content) <= max_bytes:
            pieces = list(chunks)
            assert b"".join(pieces) == content
            assert all(len(p) == size for p in pieces[:-1])
        else:
            with pytest.raises(ParseError, match="is larger than"):
                list(chunks)


def test_procfs_files_of_size_zero_are_read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """/proc reports st_size 0: the buffer grows as the kernel hands out more."""
    monkeypatch.setattr(_read, "_FIRST_READ", 8)
    assert Path("/proc/version").stat().st_size == 0
    got = _read.read_proc_text(Path("/proc"), "version", max_bytes=4096, ipvs_file=False)
    assert got == Path("/proc/version").read_text()
    with pytest.raises(ParseError, match="larger than 10 bytes"):
        _read.read_proc_text(Path("/proc"), "version", max_bytes=10, ipvs_file=False)


def _ticks(after: int) -> Deadline:
    """A deadline that passes on the `after`-th look at its clock (no wall clock involved)."""
    calls = itertools.count(1)
    return Deadline(at_s=after, budget_s=9, clock=lambda: next(calls))


def test_a_chunked_read_stops_at_its_deadline(tmp_path: Path) -> None:
    _sparse(tmp_path / "ip_vs_conn", 1 << 40)  # a terabyte: stands for a table without end
    chunks = _read.read_proc_chunks(tmp_path, "ip_vs_conn", max_bytes=1 << 41, deadline=_ticks(3))
    got = []
    with pytest.raises(DeadlineExceeded, match=r"ip_vs_conn: stopped reading, .*\(9 s\) passed"):
        for piece in chunks:
            got.append(len(piece))
    assert got == [1 << 20, 1 << 20]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_closing_a_chunked_read_closes_its_file(tmp_path: Path) -> None:
    _sparse(tmp_path / "ip_vs_conn", 8 << 20)
    before = _open_fds()
    chunks = _read.read_proc_chunks(tmp_path, "ip_vs_conn", max_bytes=1 << 30)
    next(chunks)
    assert _open_fds() == before + 1
    chunks.close()  # what the exporter's HTTP side does when its client went away
    assert _open_fds() == before


def test_a_refused_file_leaves_no_descriptor_open(tree: Path) -> None:
    _replace(tree / "net/ip_vs_stats", lambda p: p.symlink_to("/dev/zero"))
    _sparse(tree / "slabinfo", 1 << 30)
    before = _open_fds()
    for _ in range(3):
        with pytest.raises(ParseError):
            ip_vs_stats.read_ip_vs_stats(tree)
        with pytest.raises(ParseError):
            slab.read_slab(tree, None)
    assert _open_fds() == before


@pytest.mark.parametrize(
    "stream", [ip_vs_conn.stream_ip_vs_conn, ip_vs_conn_sync.stream_ip_vs_conn_sync]
)
def test_a_conn_table_line_without_end_is_refused_at_once(
    tree: Path, stream: Callable[[Path], Iterator[bytes]]
) -> None:
    """Before: the reader's consumer carried the open line into every next piece, copying
    it each time: a 20 GiB line of zeros ran for the whole deadline and hundreds of MB."""
    name = "net/ip_vs_conn" if stream is ip_vs_conn.stream_ip_vs_conn else "net/ip_vs_conn_sync"
    table = tree / name
    valid = table.stat().st_size
    _sparse(table, 20 << 30)
    tracemalloc.start()
    try:
        with pytest.raises(ParseError, match=f"the line at byte {valid} runs past 4096 bytes"):
            list(stream(tree))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_lines_up_to_the_limit_pass_across_pieces(tmp_path: Path) -> None:
    rows = (b"x" * 99 + b"\n") * 50  # pieces of 64 bytes split every line
    (tmp_path / "t").write_bytes(rows)
    got = _read.read_proc_chunks(tmp_path, "t", max_bytes=5000, max_line_bytes=99, size=64)
    assert b"".join(got) == rows
    (tmp_path / "t").write_bytes(rows + b"y" * 300 + b"\n")
    got = _read.read_proc_chunks(tmp_path, "t", max_bytes=6000, max_line_bytes=99, size=64)
    with pytest.raises(ParseError, match="the line at byte 5000 runs past 99 bytes"):
        list(got)


def test_read_file_bytes_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match=r"cannot read .*/nope: no such file"):
        ip_vs_conn.read_conn_table_file(tmp_path / "nope")
