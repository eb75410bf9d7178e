"""The reader: which pids it trusts, what it signals, how it waits for a dump (inotify)."""

from __future__ import annotations

import os
import shutil
import signal
import threading
from pathlib import Path

import pytest

from lvsprobe.errors import LvsprobeError, NotPermitted, ParseError
from lvsprobe.keepalived.dump import KeepalivedFiles, read_keepalived

FIXTURES = Path(__file__).parents[1] / "fixtures" / "keepalived-2.2.7"
MAIN, VRRP, CHECKERS = 4001, 4002, 4003


def _process(proc: Path, pid: int, ppid: int, argv0: bytes = b"/usr/sbin/keepalived") -> None:
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "cmdline").write_bytes(argv0 + b"\0-n\0-f\0/etc/keepalived.conf\0")
    (proc / str(pid) / "stat").write_bytes(f"{pid} (keep alive) S {ppid} 1 1 0 -1".encode())


@pytest.fixture
def files(tmp_path: Path) -> KeepalivedFiles:
    """A keepalived with both children, as a fake /proc and pid files; dumps go to tmp_path."""
    run, proc, dumps = tmp_path / "run", tmp_path / "proc", tmp_path / "tmp"
    for directory in (run, proc, dumps):
        directory.mkdir()
    for name, pid, ppid in (
        ("keepalived", MAIN, 1),
        ("vrrp", VRRP, MAIN),
        ("checkers", CHECKERS, MAIN),
    ):
        (run / f"{name}.pid").write_text(f"{pid}\n")
        _process(proc, pid, ppid)
    return KeepalivedFiles(run / "keepalived.pid", dumps, proc=proc)


class FakeKeepalived:
    """A kill() that writes the dump as keepalived does: rename first, then write, then close."""

    def __init__(self, dumps: Path, delay_s: float = 0.0) -> None:
        self.dumps = dumps
        self.delay_s = delay_s
        self.signals: list[tuple[int, int]] = []

    def __call__(self, pid: int, signum: int) -> None:
        self.signals.append((pid, signum))
        source = {
            36: ("vrrp/a-master.json", "keepalived.json"),
            signal.SIGUSR1: ("check/a-nat-dr-tun.data", "keepalived_check.data"),
        }
        fixture, name = source[signum]
        threading.Timer(
            self.delay_s, self._write, ((FIXTURES / fixture).read_bytes(), name)
        ).start()

    def _write(self, data: bytes, name: str) -> None:
        with open(self.dumps / name, "wb") as out:
            out.write(data[:100])
            out.flush()
            out.write(data[100:])


def test_reads_both_dumps(files: KeepalivedFiles) -> None:
    kill = FakeKeepalived(files.dump_dir, delay_s=0.05)
    dump = read_keepalived(files, 5.0, kill)
    assert kill.signals == [(VRRP, 36), (CHECKERS, signal.SIGUSR1)]
    assert dump.running
    assert [i.name for i in dump.vrrp or ()] == ["VI_web", "VI_db"]
    assert len(dump.virtual_servers or ()) == 3


def test_an_old_dump_is_not_read(files: KeepalivedFiles) -> None:
    """A dump left by an earlier signal is no answer: without a fresh one, it fails."""
    (files.dump_dir / "keepalived.json").write_bytes((FIXTURES / "vrrp/a-master.json").read_bytes())
    with pytest.raises(
        LvsprobeError, match=r"did not write keepalived\.json, keepalived_check\.data"
    ):
        read_keepalived(files, 0.2, lambda pid, signum: None)


def test_not_running(files: KeepalivedFiles) -> None:
    files.pid_file.unlink()
    assert not read_keepalived(files, 0.1, _no_signal).running


def test_stale_pid_file_gets_no_signal(files: KeepalivedFiles, tmp_path: Path) -> None:
    """The pid was reused by another program: keepalived is not running, nothing is signalled."""
    (files.proc / str(MAIN) / "cmdline").write_bytes(b"/usr/bin/python3\0")
    assert not read_keepalived(files, 0.1, _no_signal).running
    (files.proc / str(MAIN) / "cmdline").write_bytes(b"/usr/sbin/keepalived\0")
    for pid in (MAIN, VRRP, CHECKERS):  # the processes are gone
        shutil.rmtree(files.proc / str(pid))
    assert not read_keepalived(files, 0.1, _no_signal).running


def test_a_child_of_another_parent_is_not_signalled(files: KeepalivedFiles) -> None:
    (files.proc / str(CHECKERS) / "stat").write_bytes(b"4003 (keepalived) S 999 1")
    kill = FakeKeepalived(files.dump_dir)
    dump = read_keepalived(files, 5.0, kill)
    assert kill.signals == [(VRRP, 36)]
    assert dump.virtual_servers is None and dump.vrrp is not None


def test_only_vrrp_running(files: KeepalivedFiles) -> None:
    files.child_pid_file("checkers").unlink()
    dump = read_keepalived(files, 5.0, FakeKeepalived(files.dump_dir))
    assert dump.virtual_servers is None and dump.vrrp is not None


@pytest.mark.parametrize("content", [b"", b"twelve\n", b"-1\n", b"99999999\n", b"1" * 100])
def test_garbage_pid_file(files: KeepalivedFiles, content: bytes) -> None:
    files.pid_file.write_bytes(content)
    with pytest.raises(ParseError):
        read_keepalived(files, 0.1, _no_signal)


def test_garbage_dump(files: KeepalivedFiles) -> None:
    def kill(pid: int, signum: int) -> None:
        (
            files.dump_dir / ("keepalived.json" if signum == 36 else "keepalived_check.data")
        ).write_bytes(b"\0garbage")

    with pytest.raises(ParseError):
        read_keepalived(files, 5.0, kill)


def test_not_permitted(files: KeepalivedFiles) -> None:
    def kill(pid: int, signum: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    with pytest.raises(NotPermitted, match="CAP_KILL"):
        read_keepalived(files, 0.1, kill)


def test_missing_dump_dir(files: KeepalivedFiles) -> None:
    files.dump_dir.rmdir()
    with pytest.raises(LvsprobeError, match="cannot watch"):
        read_keepalived(files, 0.1, _no_signal)


@pytest.mark.parametrize(
    ("pid_file", "vrrp"),
    [
        ("/run/keepalived.pid", "/run/vrrp.pid"),
        ("/run/keepalived/keepalived_web.pid", "/run/keepalived/vrrp_web.pid"),
        ("/run/lvs1/ka.pid", "/run/lvs1/vrrp.ka.pid"),
    ],
)
def test_child_pid_files(pid_file: str, vrrp: str) -> None:
    assert KeepalivedFiles(Path(pid_file), Path("/tmp")).child_pid_file("vrrp") == Path(vrrp)


def _no_signal(pid: int, signum: int) -> None:
    raise AssertionError(f"signalled {pid} with {signum}")


def test_real_process_check_uses_proc() -> None:
    """This test process is not keepalived: a pid file naming it is stale."""
    files = KeepalivedFiles(Path(f"/proc/{os.getpid()}/nonexistent"), Path("/tmp"))
    assert not read_keepalived(files, 0.1, _no_signal).running


def test_an_unreadable_run_directory_is_an_error_not_a_crash(files: KeepalivedFiles) -> None:
    def kill(pid: int, signum: int) -> None:
        raise OSError(5, "Input/output error")

    with pytest.raises(LvsprobeError, match="Input/output error"):
        read_keepalived(files, 0.1, kill)
