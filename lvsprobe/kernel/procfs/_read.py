"""The I/O edge shared by the procfs readers: open only regular files, read at most a limit, and
map OS errors onto lvsprobe's.

A /proc tree can be a captured or mounted directory anyone could have spoiled: a symlink to
/dev/zero or /dev/urandom never ends, a FIFO blocks its reader until a writer comes, a sparse
file claims gigabytes. So a file is read only when it is a regular file (procfs and sysfs files
are, with a size of 0 or 4096 that says nothing about their content), and never past the limit
the caller sets from what the kernel can write there.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path

from lvsprobe.deadline import Deadline
from lvsprobe.errors import IPVSUnavailable, NotPermitted, ParseError
from lvsprobe.kernel.procfs.limits import GIB, KIB, MIB

# The first buffer of a whole-file read from procfs (size 0): grown by doubling up to the limit.
_FIRST_READ = 64 * KIB
# O_NONBLOCK: opening a FIFO with no writer returns at once (then it is refused), instead of
# blocking the reader for good. Regular files, procfs and sysfs ignore the flag when reading.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def read_proc_text(root: Path, name: str, *, max_bytes: int, ipvs_file: bool = True) -> str:
    """Read `root/name` whole (at most `max_bytes`), mapping OS errors onto lvsprobe's.

    A missing IPVS file means IPVS is not loaded in that namespace (`IPVSUnavailable`); a
    permission error is `NotPermitted`; a file that is not a regular one, one longer than
    `max_bytes`, or anything else the OS reports is a `ParseError` without a line, naming it.
    """
    return _read_whole(root, name, max_bytes, ipvs_file, None).decode("latin-1")


def read_proc_bytes(
    root: Path, name: str, *, max_bytes: int, ipvs_file: bool = True, raise_with: str | None = None
) -> bytes:
    """Like `read_proc_text`, as bytes; `raise_with` names the option that raises the limit."""
    return bytes(_read_whole(root, name, max_bytes, ipvs_file, raise_with))


def read_file_bytes(path: Path, *, max_bytes: int, raise_with: str | None = None) -> bytes:
    """Any file whole, checked and bounded like a /proc file; missing is a `ParseError`."""
    return read_proc_bytes(
        path.parent, path.name, max_bytes=max_bytes, ipvs_file=False, raise_with=raise_with
    )


def read_proc_chunks(
    root: Path,
    name: str,
    *,
    max_bytes: int,
    deadline: Deadline | None = None,
    raise_with: str | None = None,
    max_line_bytes: int | None = None,
    size: int = MIB,
) -> Generator[bytes, None, None]:
    """`root/name` in pieces of `size` bytes (the last shorter), for files too big to hold
    whole (ip_vs_conn: ~70 MB per 10^6 entries).

    Errors map as in `read_proc_text`, raised when the first piece is asked for. Past
    `max_bytes` it raises `ParseError`, and as soon as a piece ends in a line already longer
    than `max_line_bytes` (a consumer would carry it into the next piece, and the next...);
    once `deadline` has passed, `DeadlineExceeded` before the next piece is read. Closing
    the generator stops the reading.
    """
    path = root / name
    with _os_errors(root, path, name, ipvs_file=True):
        fd, _ = _open_regular(path, name)
        # A buffered read(size) repeats the kernel's small seq_file reads until it has size.
        with open(fd, "rb") as f:
            total = open_line = 0
            while True:
                if deadline is not None:
                    deadline.check(name)
                piece = f.read(min(size, max_bytes + 1 - total))
                if not piece:
                    return
                total += len(piece)
                if total > max_bytes:
                    raise _too_big(path, name, max_bytes, raise_with)
                if max_line_bytes is not None:
                    newline = piece.rfind(b"\n")
                    open_line = open_line + len(piece) if newline < 0 else len(piece) - newline - 1
                    if open_line > max_line_bytes:
                        start = total - open_line
                        reason = (
                            f"{path}: the line at byte {start} runs past {max_line_bytes} "
                            "bytes, longer than any the kernel writes"
                        )
                        raise ParseError(name, None, None, reason)
                yield piece


def read_optional_text(root: Path, name: str, *, max_bytes: int) -> str | None:
    """`root/name` as text, or None when it does not exist or is not readable (0400 files
    such as /proc/slabinfo without root); other failures are a `ParseError`."""
    try:
        return read_proc_text(root, name, max_bytes=max_bytes, ipvs_file=True)
    except (IPVSUnavailable, NotPermitted):
        return None


def where_missing(root: Path, path: Path) -> str:
    """`this network namespace (/proc/net/ip_vs does not exist)`, or names the /proc tree."""
    namespace = "this network namespace" if root == Path("/proc") else f"the /proc tree {root}"
    return f"{namespace} ({path} does not exist)"


def _read_whole(
    root: Path, name: str, max_bytes: int, ipvs_file: bool, raise_with: str | None
) -> bytearray:
    """At most `max_bytes` + 1 bytes read into one buffer (no list of pieces to join)."""
    path = root / name
    with _os_errors(root, path, name, ipvs_file):
        fd, size_hint = _open_regular(path, name)
        try:
            buf = bytearray(min(max(size_hint + 1, _FIRST_READ), max_bytes + 1))
            filled = 0
            while True:
                if filled == len(buf):
                    if filled > max_bytes:
                        raise _too_big(path, name, max_bytes, raise_with)
                    buf.extend(bytes(min(len(buf), max_bytes + 1 - len(buf))))
                with memoryview(buf)[filled:] as free:
                    count = os.readv(fd, [free])
                if not count:
                    break
                filled += count
        finally:
            os.close(fd)
    del buf[filled:]
    return buf


def _open_regular(path: Path, name: str) -> tuple[int, int]:
    """An fd open on `path` and its st_size, or `ParseError` when it is no regular file.

    Checked before opening too: opening a device can act (a watchdog, a tape drive).
    The fd's own check is the one that counts, should the path change in between.
    """
    _require_regular(path, name, os.stat(path).st_mode)
    fd = os.open(path, _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        _require_regular(path, name, st.st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def _require_regular(path: Path, name: str, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    kind = next((kind for test, kind in _KINDS if test(mode)), f"of type {stat.S_IFMT(mode):o}")
    shown = f"{path} (-> {os.readlink(path)})" if path.is_symlink() else str(path)
    raise ParseError(name, None, None, f"{shown} is {kind}, not a regular file")


def _too_big(path: Path, name: str, max_bytes: int, raise_with: str | None) -> ParseError:
    why = f"raise the limit with {raise_with}" if raise_with else "more than the kernel writes"
    unit = _in_units(max_bytes)
    size = f"{max_bytes} bytes" + (f" ({unit})" if unit else "")
    return ParseError(name, None, None, f"{path} is larger than {size}: {why}")


def _in_units(n_bytes: int) -> str | None:
    """4096 -> `4 KiB`, 268435456 -> `256 MiB`; None unless a whole number of one."""
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n_bytes >= scale and n_bytes % scale == 0:
            return f"{n_bytes // scale} {unit}"
    return None


@contextmanager
def _os_errors(root: Path, path: Path, name: str, ipvs_file: bool) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError as exc:
        if ipvs_file:
            raise IPVSUnavailable(where_missing(root, path)) from exc
        raise ParseError(name, None, None, f"cannot read {path}: no such file") from exc
    except PermissionError as exc:
        raise NotPermitted(f"{path}: permission denied") from exc
    except OSError as exc:
        raise ParseError(name, None, None, f"cannot read {path}: {exc.strerror or exc}") from exc
