"""The I/O edge shared by the procfs readers: read one file, map OS errors onto lvsprobe's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lvsprobe.errors import IPVSUnavailable, NotPermitted, ParseError


def read_proc_text(root: Path, name: str, *, ipvs_file: bool = True) -> str:
    """Read `root/name` in one go, mapping OS errors onto the lvsprobe error family.

    A missing IPVS file means IPVS is not loaded in that namespace (`IPVSUnavailable`);
    a permission error is `NotPermitted`; anything else the OS reports is a `ParseError`
    without a line, naming the file.
    """
    return read_proc_bytes(root, name, ipvs_file=ipvs_file).decode("latin-1")


def read_proc_bytes(root: Path, name: str, *, ipvs_file: bool = True) -> bytes:
    """Like `read_proc_text`, as bytes, in big reads (a seq_file gives <= ~4 KiB per read)."""
    path = root / name
    try:
        # FileIO.readall(): big read() requests into one growing buffer, no join copy.
        with path.open("rb", buffering=0) as f:
            return f.readall()
    except FileNotFoundError as exc:
        if ipvs_file:
            raise IPVSUnavailable(where_missing(root, path)) from exc
        raise ParseError(name, None, None, f"cannot read {path}: no such file") from exc
    except PermissionError as exc:
        raise NotPermitted(f"{path}: permission denied") from exc
    except OSError as exc:
        raise ParseError(name, None, None, f"cannot read {path}: {exc.strerror or exc}") from exc


def read_proc_chunks(root: Path, name: str, size: int = 1 << 20) -> Iterator[bytes]:
    """`root/name` in pieces of `size` bytes (the last shorter), for files too big to hold
    whole (ip_vs_conn: ~70 MB per 10^6 entries). Errors map as in `read_proc_bytes`, raised
    when the first piece is asked for.
    """
    path = root / name
    try:
        # A buffered read(size) repeats the kernel's small seq_file reads until it has size.
        with path.open("rb") as f:
            while piece := f.read(size):
                yield piece
    except FileNotFoundError as exc:
        raise IPVSUnavailable(where_missing(root, path)) from exc
    except PermissionError as exc:
        raise NotPermitted(f"{path}: permission denied") from exc
    except OSError as exc:
        raise ParseError(name, None, None, f"cannot read {path}: {exc.strerror or exc}") from exc


def read_optional_text(root: Path, name: str) -> str | None:
    """`root/name` as text, or None when it does not exist or is not readable (0400 files
    such as /proc/slabinfo without root); other OS errors are a `ParseError`."""
    try:
        return read_proc_text(root, name, ipvs_file=True)
    except (IPVSUnavailable, NotPermitted):
        return None


def where_missing(root: Path, path: Path) -> str:
    """`this network namespace (/proc/net/ip_vs does not exist)`, or names the /proc tree."""
    namespace = "this network namespace" if root == Path("/proc") else f"the /proc tree {root}"
    return f"{namespace} ({path} does not exist)"
