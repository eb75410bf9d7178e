"""Run a function inside another network namespace (`/run/netns/NAME` or `/proc/PID/ns/net`).

setns(2) with CLONE_NEWNET changes only the calling thread, so `run_in_netns` does it in a
short-lived thread of its own and the caller's threads never move. What the function
creates there keeps that namespace after the thread ends: a netlink socket opened inside
stays bound to the target netns for its whole life.

Reading procfs for a namespace (for `sources.py`): inside the function, `/proc/net` is NOT
the thread's view (it is `/proc/self/net`, the thread-group leader's netns). Use
`proc_net_root_for_thread()`, i.e. `/proc/thread-self`, whose `net/ip_vs*` show the
thread's netns:

    run_in_netns(lambda: read_x(proc_net_root_for_thread()), netns="blue")

`/proc/sys/net/...` (the IPVS sysctls) is resolved per opening task, so inside the
function plain `/proc/sys` already shows the target netns; `/proc/thread-self` has no
`sys/`. Slab and module parameters are global.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from lvsprobe.errors import NamespaceError

T = TypeVar("T")

CLONE_NEWNET = 0x40000000  # include/uapi/linux/sched.h
NETNS_RUN_DIR = Path("/run/netns")  # where `ip netns add` bind-mounts named namespaces


def proc_net_root_for_thread() -> Path:
    """A /proc-like root whose `net/` is the calling thread's network namespace."""
    return Path("/proc/thread-self")


def describe_netns(*, netns: str | None = None, pid: int | None = None) -> str:
    """How errors name the target: 'network namespace "blue"', 'the network namespace of pid 7'."""
    if netns is not None:
        return f'network namespace "{netns}"'
    if pid is not None:
        return f"the network namespace of pid {pid}"
    return "this network namespace"


def netns_path(*, netns: str | None = None, pid: int | None = None) -> Path:
    """The namespace file to setns() into; validates the name or pid."""
    if netns is not None and pid is not None:
        raise NamespaceError("give a network namespace name or a pid, not both")
    if netns is not None:
        if not netns or "/" in netns or netns in (".", "..") or "\0" in netns:
            raise NamespaceError(f"invalid network namespace name {netns!r}")
        return NETNS_RUN_DIR / netns
    if pid is not None:
        if pid <= 0:
            raise NamespaceError(f"invalid pid {pid}")
        return Path(f"/proc/{pid}/ns/net")
    raise NamespaceError("no network namespace given")


def _libc_setns() -> Callable[[int, int], int]:
    # The interpreter's own symbols include libc's: no ctypes.util (it loads subprocess,
    # shutil and tempfile, and runs ldconfig, to find the file).
    libc = ctypes.CDLL(None, use_errno=True)
    setns = libc.setns
    setns.argtypes = (ctypes.c_int, ctypes.c_int)
    setns.restype = ctypes.c_int
    return setns


def _open_ns(path: Path, what: str, *, netns: str | None) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        hint = f"no {path}; see `ip netns list`" if netns is not None else "no such process"
        raise NamespaceError(f"cannot enter {what}: {hint}") from None
    except OSError as exc:
        raise NamespaceError(f"cannot enter {what}: {path}: {exc.strerror}") from exc


def _enter(fd: int, what: str) -> None:
    if _libc_setns()(fd, CLONE_NEWNET) == 0:
        return
    err = ctypes.get_errno()
    if err == errno.EPERM:
        reason = "permission denied (setns needs CAP_SYS_ADMIN)"
    elif err == errno.EINVAL:
        reason = "not a network namespace"
    else:
        reason = os.strerror(err)
    raise NamespaceError(f"cannot enter {what}: {reason}")


def run_in_netns(fn: Callable[[], T], *, netns: str | None = None, pid: int | None = None) -> T:
    """fn() run in a fresh thread that entered the namespace; its result or its exception.

    With neither `netns` nor `pid`, fn runs here in the caller's thread.
    """
    if netns is None and pid is None:
        return fn()
    path = netns_path(netns=netns, pid=pid)
    what = describe_netns(netns=netns, pid=pid)
    fd = _open_ns(path, what, netns=netns)
    outcome: list[T] = []
    failure: list[BaseException] = []

    def worker() -> None:
        try:
            _enter(fd, what)
            outcome.append(fn())
        except BaseException as exc:  # handed to the caller's thread, which re-raises it
            failure.append(exc)

    try:
        thread = threading.Thread(target=worker, name=f"netns-{netns or pid}", daemon=True)
        thread.start()
        thread.join()
    finally:
        os.close(fd)
    if failure:
        raise failure[0]
    return outcome[0]
