"""Failover with the IPVS sync daemon: lvs1's established connections are in lvs2's table,
and they keep working after the VIP (and the NAT gateway) move to lvs2."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

pytestmark = pytest.mark.lab

HELD = 6


def echo(sock: socket.socket, text: str) -> str:
    sock.sendall(text.encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data.decode().strip()


def synced_conns(lab: Any, ns: str) -> list[str]:
    """ESTABLISHED entries to VIP:7 in `ns`'s connection table."""
    rows = lab.ipvsadm("-Lnc", ns=ns).splitlines()[2:]
    return [r for r in rows if f" {lab.vip}:7 " in f" {r} " and "ESTABLISHED" in r]


def test_failover_keeps_synced_connections(lab: Any) -> None:
    lab.ensure()
    assert lab.topology.sync
    address = lab.forward("client", 7, host=lab.vip)
    held = [socket.create_connection(address, timeout=60) for _ in range(HELD)]
    try:
        banners = []
        for sock in held:
            banners.append(sock.recv(64).decode().strip())  # the echo banner: "rsN"
            for i in range(3):  # >= 3 inbound packets: a conn is synced on its 3rd (3 50)
                assert echo(sock, f"before {i}") == f"before {i}"
        assert set(banners) == set(lab.real_server_names)

        deadline = time.monotonic() + 30  # the sync daemon flushes every <= 2 s
        while len(synced_conns(lab, "lvs2")) < HELD and time.monotonic() < deadline:
            time.sleep(1)
        assert len(synced_conns(lab, "lvs1")) == HELD
        assert len(synced_conns(lab, "lvs2")) == HELD

        lab.failover()
        assert lab.vip in lab.run("lvs2", ["ip", "-br", "addr"]).stdout
        assert lab.vip not in lab.run("lvs1", ["ip", "-br", "addr"]).stdout
        for sock in held:  # the same TCP connections, now through lvs2
            assert echo(sock, "after failover") == "after failover"
    finally:
        for sock in held:
            sock.close()
        lab.mark_dirty()
    lab.failback()
    assert lab.vip in lab.run("lvs1", ["ip", "-br", "addr"]).stdout
