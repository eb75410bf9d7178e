"""Real servers read column by column (the tables /proc/net/ip_vs and netlink dumps fill)
export exactly what the same real servers given as objects do, under every cap and filter,
in any mix."""

from __future__ import annotations

import dataclasses
import random
from unittest.mock import patch

import pytest

from lvsprobe.exporter.filters import ServiceFilter, parse_service_match
from lvsprobe.exporter.scrape import ExportOptions, Scraper
from lvsprobe.kernel.genl.simulated import SimulatedKernel, generated_services
from lvsprobe.kernel.genl.socket import IPVSNetlink
from lvsprobe.kernel.procfs import ip_vs
from lvsprobe.model import Service, Snapshot
from lvsprobe.sources import Target

HEAD = (
    "IP Virtual Server version 1.2.1 (size=4096)\n"
    "Prot LocalAddress:Port Scheduler Flags\n"
    "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n"
)
FORWARDS = ("Masq", "Local", "Tunnel", "Route")


def _table_text(services: int, seed: int) -> str:
    """A kube-proxy-like table (~5000 real servers, backends shared between services) with
    an fwmark service, empty services and exotic lines (IPv6, lower case) among them."""
    rnd = random.Random(seed)
    lines = [HEAD]
    for number in range(services):
        if number % 97 == 5:
            lines.append(f"FWM  {number:08X} wlc \n")
        else:
            lines.append(
                f"TCP  0A00{number // 256:02X}{number % 256:02X}:{number % 65536:04X} rr \n"
            )
        for _ in range(rnd.choice([0, 1, 8, 10, 12])):
            backend = (
                rnd.randrange(1 << 32) if rnd.random() < 0.5 else 0xAC100000 + rnd.randrange(64)
            )
            lines.append(
                f"  -> {backend:08X}:{rnd.randrange(65536):04X}      "
                f"{rnd.choice(FORWARDS):<7s} {rnd.randrange(3):<6d} {rnd.randrange(-1, 99):<10d} "
                f"{rnd.randrange(10**6):<10d}\n"
            )
        if number % 131 == 7:
            lines.append(
                "  -> [2001:0002:0000:0001:0000:0000:0000:0011]:0050"
                "      Route   2      0          0\n"
            )
            lines.append("  -> c0a8010a:0050      Masq    1      0          0         \n")
    return "".join(lines)


def _body(snap: Snapshot, **options: object) -> list[str]:
    opts = ExportOptions(**options)  # type: ignore[arg-type]
    body = Scraper(opts, read=lambda target, **kw: snap, build=("0", "3")).scrape().decode()
    return [line for line in body.splitlines() if "duration_seconds" not in line]


def _as_objects(services: tuple[Service, ...]) -> tuple[Service, ...]:
    """The services with their real servers given as objects (a table each)."""
    return tuple(
        dataclasses.replace(svc, real_servers=svc.real_servers.objects()) for svc in services
    )


@pytest.fixture(scope="module")
def parsed() -> tuple[Service, ...]:
    with patch.object(ip_vs, "NUMPY_MIN_CHARS", 0), patch.object(ip_vs, "BLOCK_CHARS", 1 << 12):
        services = ip_vs.parse_ip_vs(_table_text(800, seed=4)).services
    tables = {id(svc.real_servers.table) for svc in services}
    assert len(tables) == 1  # exotic lines joined into the fast path's table
    assert sum(map(len, (svc.real_servers for svc in services))) > 4096  # numpy texts too
    return services


OPTIONS = {
    "default": {},
    "cap mid-service": {"max_backends": 2345},
    "cap at 0": {"max_backends": 0},
    "filtered": {
        "service_filter": ServiceFilter(
            include=(parse_service_match("10.0.0.0/15"),),
            exclude=(parse_service_match("10.0.1.0/24"),),
        )
    },
    "compat": {"compat_node_exporter": True},
    "per real server": {"conns": "per-real-server"},
}


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_rows_export_what_objects_do(
    parsed: tuple[Service, ...], options: dict[str, object]
) -> None:
    snap = Snapshot(loaded=True, via="procfs", version="1.2.1", services=parsed)
    want = _body(dataclasses.replace(snap, services=_as_objects(parsed)), **options)
    assert _body(snap, **options) == want
    assert (
        any(line.startswith("ipvs_backend_weight{") for line in want)
        or options.get("max_backends") == 0
    )


@pytest.mark.parametrize("seed", range(4))
def test_rows_in_any_order_and_mix_export_what_objects_do(
    parsed: tuple[Service, ...], seed: int
) -> None:
    """Rows out of table order, of two tables, and tables of objects between them."""
    rnd = random.Random(seed)
    other = ip_vs.parse_ip_vs(_table_text(40, seed=seed + 10)).services
    mixed = list(parsed[: 300 + seed]) + list(other)
    mixed = [
        dataclasses.replace(svc, real_servers=svc.real_servers.objects())
        if rnd.random() < 0.2
        else svc
        for svc in mixed
    ]
    # An fwmark service of no known family: its real servers tell (rows are IPv4).
    mixed = [
        dataclasses.replace(svc, key=dataclasses.replace(svc.key, family=None))
        if svc.key.fwmark
        else svc
        for svc in mixed
    ]
    rnd.shuffle(mixed)
    snap = Snapshot(loaded=True, via="procfs", services=tuple(mixed))
    want = _body(dataclasses.replace(snap, services=_as_objects(snap.services)))
    assert _body(snap) == want


@pytest.fixture(scope="module")
def netlink_read() -> tuple[Service, ...]:
    """A netlink read of services whose real servers have every netlink-only field, some
    without thresholds, counters or rates, and IPv6 and fwmark services among them."""
    services = generated_services(120, seed=3)
    return IPVSNetlink.connect(SimulatedKernel(services)).services()


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_netlink_rows_export_what_objects_do(
    netlink_read: tuple[Service, ...], options: dict[str, object]
) -> None:
    snap = Snapshot(loaded=True, via="netlink", version="1.2.1", services=netlink_read)
    want = _body(dataclasses.replace(snap, services=_as_objects(netlink_read)), **options)
    assert _body(snap, **options) == want
    if options.get("max_backends") != 0:
        assert any(line.startswith("ipvs_backend_incoming_bytes_total{") for line in want)
        assert any(line.startswith("ipvs_backend_persistent_connections{") for line in want)


def test_netlink_and_procfs_namespaces_in_one_scrape(
    netlink_read: tuple[Service, ...], parsed: tuple[Service, ...]
) -> None:
    """Two namespaces, one read each way, share the families' lists of label blocks."""
    snaps = {
        "a": Snapshot(loaded=True, via="netlink", services=netlink_read[:50]),
        "b": Snapshot(loaded=True, via="procfs", services=parsed[:50]),
    }
    objects = {
        name: dataclasses.replace(s, services=_as_objects(s.services)) for name, s in snaps.items()
    }

    def body(by_name: dict[str, Snapshot]) -> str:
        opts = ExportOptions(targets=(Target(netns="a"), Target(netns="b")))
        scraper = Scraper(opts, read=lambda target, **kw: by_name[target.netns], build=("0", "3"))
        return scraper.scrape().decode()

    assert body(snaps) == body(objects)
