"""Traffic through the VIP on the real kernel: counters, rr shares, FTP through NAT, UDP."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest

from lvsprobe.lab.backends import FTP_FILE_SIZE, ftp_file

pytestmark = pytest.mark.lab


def conns_by_line(lab: Any, service: str) -> dict[str, int]:
    """`ipvsadm -Ln --exact --stats -t SERVICE`: the Conns column of the service ("service")
    and of each real server (by its address)."""
    out = lab.ipvsadm("-Ln", "--exact", "--stats", "-t", service)
    counts = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] == "->":
            counts[fields[1].rsplit(":", 1)[0]] = int(fields[2])
        elif len(fields) >= 3 and fields[0] == "TCP":
            counts["service"] = int(fields[2])
    return counts


def test_http_requests_grow_the_conn_counter_and_rr_shares_exactly(lab: Any) -> None:
    lab.ensure()
    service = f"{lab.vip}:80"
    before = conns_by_line(lab, service)
    n = 30
    doc = lab.client("http", lab.vip, "--sources", ",".join(lab.client_addresses[:n]))
    assert doc["errors"] == []
    assert doc["tally"] == {name: n // 3 for name in lab.real_server_names}

    deadline = time.monotonic() + 30  # the kernel's stats are refreshed every 2 s
    while True:
        after = conns_by_line(lab, service)
        grown = {key: after[key] - before.get(key, 0) for key in after}
        if grown["service"] >= n or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert grown["service"] == n
    assert {rip: grown[rip] for rip in lab.real_server_addresses} == dict.fromkeys(
        lab.real_server_addresses, n // 3
    )


def test_ftp_active_and_passive_through_nat(lab: Any) -> None:
    lab.ensure()
    assert "ip_vs_ftp" in lab.run(None, ["cat", "/proc/modules"]).stdout
    sources = list(lab.client_addresses[40:43])
    jobs = [
        {"proto": "ftp", "vip": lab.vip, "sources": sources, "active": True},
        {"proto": "ftp", "vip": lab.vip, "sources": sources, "passive": True},
    ]
    results = lab.client_batch(jobs)
    transfers = [t for r in results for t in r["transfers"]]
    assert [r["errors"] for r in results] == [[], []]
    assert sorted(t["mode"] for t in transfers) == ["active"] * 3 + ["passive"] * 3
    for t in transfers:
        assert t["bytes"] == FTP_FILE_SIZE
        assert t["sha256"] == hashlib.sha256(ftp_file(t["backend"])).hexdigest()
        if t["mode"] == "passive":  # ip_vs_ftp rewrote the real server's address to the VIP
            assert t["pasv_reply"].startswith("227 ") and "(198,18,1,100," in t["pasv_reply"]
    assert {t["backend"] for t in transfers} == set(lab.real_server_names)


def test_udp_echo_answers_from_the_vip(lab: Any) -> None:
    lab.ensure()
    doc = lab.client("udp", lab.vip, "--sources", ",".join(lab.client_addresses[50:56]))
    assert doc["errors"] == []
    assert sum(doc["tally"].values()) == 6 and set(doc["tally"]) <= set(lab.real_server_names)
