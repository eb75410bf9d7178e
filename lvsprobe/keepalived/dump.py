"""The I/O edge: find a running keepalived by its pid files, signal it to dump, read the dumps.

keepalived writes a dump from its event loop after the signal, into a temporary file that it
renames to the dump's name *before* writing (fopen_safe in keepalived's lib/utils.c): the
name exists while the text is still being written. So the reader watches the directory
(inotify, IN_CLOSE_WRITE, which needs no privilege) and reads a dump only once keepalived has
closed it. A signal goes only to a pid that is keepalived's: the main process's command is
keepalived and each child's parent is the main process, so a stale pid file whose pid was
reused never gets a SIGUSR1 (whose default action ends a process).
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import signal
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lvsprobe.errors import LvsprobeError, NotPermitted, ParseError
from lvsprobe.keepalived.check_data import parse_keepalived_check_data
from lvsprobe.keepalived.files import KeepalivedFiles
from lvsprobe.keepalived.model import CheckedVirtualServer, VrrpInstance
from lvsprobe.keepalived.vrrp_json import parse_keepalived_json
from lvsprobe.kernel.procfs._read import read_file_bytes
from lvsprobe.kernel.procfs.limits import KIB, MIB

JSON_FILE = "keepalived.json"
CHECK_FILE = "keepalived_check.data"
# A real server takes ~1 KiB of the checker dump (its block and its checker's): 64 MiB holds
# tens of thousands.
DUMP_MAX_BYTES = 64 * MIB
_PID_FILE_MAX_BYTES = 64
_CMDLINE_MAX_BYTES = 64 * KIB
# inotify(7): struct inotify_event is wd, mask, cookie, len, then len bytes of name.
_IN_CLOSE_WRITE = 0x8
_EVENT = struct.Struct("iIII")

Kill = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class KeepalivedDump:
    """One reading: whether keepalived runs, and what its VRRP and checker processes dumped
    (None for a process that is not running: keepalived starts only those configured)."""

    running: bool
    vrrp: tuple[VrrpInstance, ...] | None = None
    virtual_servers: tuple[CheckedVirtualServer, ...] | None = None


def read_keepalived(
    files: KeepalivedFiles, timeout_s: float, kill: Kill = os.kill
) -> KeepalivedDump:
    """Signal keepalived's VRRP and checker processes, wait up to `timeout_s` for both dumps,
    parse them. keepalived not running is a KeepalivedDump, not an error; any other failure is
    an LvsprobeError."""
    try:
        return _read(files, timeout_s, kill)
    except PermissionError as exc:
        raise NotPermitted(f"keepalived: {exc}") from exc
    except OSError as exc:
        raise LvsprobeError(f"keepalived: {exc}") from exc


def _read(files: KeepalivedFiles, timeout_s: float, kill: Kill) -> KeepalivedDump:
    main = _keepalived_pid(files, files.pid_file, None)
    if main is None:
        return KeepalivedDump(running=False)
    wanted: dict[str, tuple[int, int]] = {}
    vrrp = _keepalived_pid(files, files.child_pid_file("vrrp"), main)
    if vrrp is not None:
        wanted[JSON_FILE] = (vrrp, files.json_signal)
    checkers = _keepalived_pid(files, files.child_pid_file("checkers"), main)
    if checkers is not None:
        wanted[CHECK_FILE] = (checkers, signal.SIGUSR1)
    if wanted:
        _dump(files.dump_dir, wanted, timeout_s, kill)
    texts = {name: _read_dump(files.dump_dir / name) for name in wanted}
    return KeepalivedDump(
        running=True,
        vrrp=parse_keepalived_json(texts[JSON_FILE]) if JSON_FILE in texts else None,
        virtual_servers=(
            parse_keepalived_check_data(texts[CHECK_FILE].decode("utf-8", "backslashreplace"))
            if CHECK_FILE in texts
            else None
        ),
    )


def _keepalived_pid(files: KeepalivedFiles, pid_file: Path, parent: int | None) -> int | None:
    """The pid in `pid_file` if that process is keepalived (and `parent`'s child), else None."""
    if not pid_file.exists():
        return None
    text = read_file_bytes(pid_file, max_bytes=_PID_FILE_MAX_BYTES).strip()
    if not text.isdigit() or not 0 < int(text) < 1 << 22:  # PID_MAX_LIMIT
        raise ParseError(str(pid_file), 1, text, "not a pid")
    pid = int(text)
    try:
        cmdline = read_file_bytes(files.proc / str(pid) / "cmdline", max_bytes=_CMDLINE_MAX_BYTES)
        stat = read_file_bytes(files.proc / str(pid) / "stat", max_bytes=4 * KIB)
    except ParseError:
        return None  # gone, or a pid of another namespace: not running here
    if os.path.basename(cmdline.split(b"\0")[0]) != b"keepalived":
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last.
    fields = stat.rpartition(b")")[2].split()
    if parent is not None and (len(fields) < 2 or fields[1] != str(parent).encode()):
        return None
    return pid


def _read_dump(path: Path) -> bytes:
    return read_file_bytes(path, max_bytes=DUMP_MAX_BYTES)


def _dump(
    directory: Path, wanted: dict[str, tuple[int, int]], timeout_s: float, kill: Kill
) -> None:
    """Signal each process and wait until it has closed its dump in `directory`."""
    with _ClosedFiles(directory) as watch:
        for pid, signum in wanted.values():
            try:
                kill(pid, signum)
            except PermissionError:
                raise NotPermitted(
                    f"keepalived: not allowed to signal pid {pid} (run as root or with CAP_KILL)"
                ) from None
            except ProcessLookupError:
                raise LvsprobeError(f"keepalived: pid {pid} ended while being read") from None
        missing = watch.wait(set(wanted), time.monotonic() + timeout_s)
    if missing:
        raise LvsprobeError(
            f"keepalived did not write {', '.join(sorted(missing))} in {directory} within "
            f"{timeout_s:g} s (is keepalived stopped, or its TMPDIR elsewhere?)"
        )


class _ClosedFiles:
    """An inotify watch for files closed after writing in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.fd = -1

    def __enter__(self) -> _ClosedFiles:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise LvsprobeError(f"keepalived: inotify_init1: {os.strerror(ctypes.get_errno())}")
        self.fd = fd
        add_watch = libc.inotify_add_watch
        add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        if add_watch(fd, os.fsencode(self.directory), _IN_CLOSE_WRITE) < 0:
            code = ctypes.get_errno()
            os.close(fd)
            if code in (errno.EACCES, errno.EPERM):
                raise NotPermitted(f"keepalived: cannot watch {self.directory}: permission denied")
            raise LvsprobeError(f"keepalived: cannot watch {self.directory}: {os.strerror(code)}")
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def wait(self, names: set[str], until: float) -> set[str]:
        """Wait until each of `names` was closed after writing, or `until`; the names left."""
        missing = set(names)
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while missing:
            left_ms = (until - time.monotonic()) * 1000
            if left_ms <= 0 or not poller.poll(left_ms):
                break
            buf = os.read(self.fd, 64 * KIB)
            offset = 0
            while offset + _EVENT.size <= len(buf):
                _wd, _mask, _cookie, length = _EVENT.unpack_from(buf, offset)
                start = offset + _EVENT.size
                missing.discard(os.fsdecode(buf[start : start + length].rstrip(b"\0")))
                offset = start + length
        return missing
