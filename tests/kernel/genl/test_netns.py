"""run_in_netns for real: a throw-away namespace made with `ip netns add` (root needed)."""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsprobe.errors import IPVSUnavailable, NamespaceError
from lvsprobe.kernel.genl.socket import IPVSNetlink
from lvsprobe.kernel.netns import NETNS_RUN_DIR, proc_net_root_for_thread, run_in_netns

SIOCGSKNS = 0x894C  # ioctl: an fd for a socket's network namespace (4.9+)

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2's ip"
)


def _ns_inode(path: str | Path) -> int:
    return os.stat(path).st_ino


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"lvsprobe-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)


def _interfaces() -> list[str]:
    lines = (proc_net_root_for_thread() / "net/dev").read_text().splitlines()[2:]
    return sorted(line.split(":")[0].strip() for line in lines)


def test_without_a_namespace_fn_runs_in_the_calling_thread() -> None:
    assert run_in_netns(threading.get_ident) == threading.get_ident()


@needs_root
def test_enters_a_loopback_only_namespace(netns: str) -> None:
    mine = _ns_inode("/proc/thread-self/ns/net")
    inside = run_in_netns(_interfaces, netns=netns)
    assert inside == ["lo"]
    assert run_in_netns(lambda: _ns_inode("/proc/thread-self/ns/net"), netns=netns) == _ns_inode(
        NETNS_RUN_DIR / netns
    )
    # the caller never moved
    assert _ns_inode("/proc/thread-self/ns/net") == mine != _ns_inode(NETNS_RUN_DIR / netns)


@needs_root
def test_proc_sys_net_follows_the_thread(netns: str) -> None:
    """IPVS sysctls are read from plain /proc/sys inside the function (no thread-self/sys)."""
    conf = run_in_netns(lambda: sorted(os.listdir("/proc/sys/net/ipv4/conf")), netns=netns)
    assert conf == ["all", "default", "lo"]


@needs_root
def test_sockets_made_inside_stay_in_the_namespace(netns: str) -> None:
    sock = run_in_netns(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 16), netns=netns)
    try:
        ns_fd = fcntl.ioctl(sock.fileno(), SIOCGSKNS)
        try:
            assert os.fstat(ns_fd).st_ino == _ns_inode(NETNS_RUN_DIR / netns)
        finally:
            os.close(ns_fd)
    finally:
        sock.close()


@needs_root
def test_enters_the_namespace_of_a_pid(netns: str) -> None:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, "sh", "-c", "echo ready; exec cat"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        assert run_in_netns(_interfaces, pid=proc.pid) == ["lo"]
    finally:
        proc.kill()
        proc.wait(timeout=30)


@needs_root
def test_ipvs_reader_in_a_namespace_without_ipvs(netns: str) -> None:
    if Path("/proc/net/ip_vs").exists():
        pytest.skip("IPVS is loaded on this host")
    with pytest.raises(IPVSUnavailable, match=f'IPVS is not loaded in network namespace "{netns}"'):
        IPVSNetlink.open(netns=netns)


@needs_root
def test_exceptions_and_results_cross_back() -> None:
    def boom() -> None:
        raise KeyError("inside")

    with pytest.raises(KeyError, match="inside"):
        run_in_netns(boom, pid=os.getpid())
    assert run_in_netns(lambda: 42, pid=os.getpid()) == 42


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"netns": "lvsprobe-missing"}, r'network namespace "lvsprobe-missing": no /run/netns/'),
        ({"netns": "a/b"}, "invalid network namespace name 'a/b'"),
        ({"netns": ".."}, "invalid network namespace name"),
        ({"netns": ""}, "invalid network namespace name"),
        ({"pid": 0}, "invalid pid 0"),
        ({"pid": 2**22 + 12345}, "the network namespace of pid 4206649: no such process"),
        ({"netns": "x", "pid": 1}, "not both"),
    ],
)
def test_errors_name_the_namespace(kwargs: dict, message: str) -> None:
    with pytest.raises(NamespaceError, match=message):
        run_in_netns(lambda: None, **kwargs)


@needs_root
def test_a_file_that_is_not_a_namespace() -> None:
    NETNS_RUN_DIR.mkdir(parents=True, exist_ok=True)
    name = f"lvsprobe-test-plain-{uuid.uuid4().hex[:8]}"
    path = NETNS_RUN_DIR / name
    path.write_text("")
    try:
        with pytest.raises(NamespaceError, match=f'"{name}": not a network namespace'):
            run_in_netns(lambda: None, netns=name)
    finally:
        path.unlink()
