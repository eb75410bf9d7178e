"""`lvsprobe export` against node_exporter's ipvs collector on the same generated /proc tree.

The tree: 10k services x 10 real servers (100k backends, 300k node_ipvs_* series) and a
1M-line connection table. Both exporters run as their own process on loopback; the figures are
client-side scrape time (full body; gzipped with --gzip, as Prometheus asks by default), each
process's CPU time per scrape, its RSS once started (idle, before the first scrape) and its
peak RSS (VmHWM). The exporters run side by side and are scraped in turn.

With --netlink, lvsprobe reads the services by generic netlink, its default on a live
node, from a simulated 6.1 kernel in another process (bench/simulated_wire.py), and the rest
from the tree; node_exporter reads the same services from the tree's /proc/net/ip_vs. This
is the lab's comparison (bench_lab_export.py) without the VM: the figures to set against the
lab's are the lvsprobe process's own.

    python -m bench                     # every bench; or:
    python bench/bench_export.py [--services N] [--backends N] [--conns N] [--scrapes N]
                                 [--gzip] [--netlink]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from lvsprobe.kernel.genl.simulated import generated_services
from lvsprobe.model import Protocol, Service

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
TARGET_RATIO = 0.25

_STATS_HEAD = (
    "   Total Incoming Outgoing         Incoming         Outgoing\n"
    "   Conns  Packets  Packets            Bytes            Bytes\n"
)
_RATES_HEAD = " Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s\n"
_CONN_HEAD = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n"
_SYNC_HEAD = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Origin Expires\n"


def _addr(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """How /proc/net/ip_vs prints an address: %08X (host order) or [%pI6] (full, lower case)."""
    if address.version == 4:
        return f"{int(address):08X}"
    return f"[{address.exploded}]"


def format_ip_vs(services: Iterable[Service], table_size: int = 4096) -> str:
    """/proc/net/ip_vs exactly as ip_vs_info_seq_show prints it (docs/kernel/procfs.md#ip_vs)."""
    out = [
        f"IP Virtual Server version 1.2.1 (size={table_size})\n",
        "Prot LocalAddress:Port Scheduler Flags\n",
        "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n",
    ]
    for svc in services:
        key = svc.key
        ops = "ops " if svc.one_packet else ""
        if key.fwmark:
            line = f"FWM  {key.fwmark:08X} {svc.scheduler} {ops}"
        elif key.address is not None and key.address.version == 6:
            line = f"{_proto(key.protocol)}  {_addr(key.address)}:{key.port:04X} {svc.scheduler} "
        else:
            assert key.address is not None
            endpoint = f"{_addr(key.address)}:{key.port:04X}"
            line = f"{_proto(key.protocol)}  {endpoint} {svc.scheduler} {ops} "
        p = svc.persistence
        if p is not None:
            mask = (
                p.prefix_len
                if key.address is not None and key.address.version == 6
                else ((0xFFFFFFFF << (32 - p.prefix_len)) & 0xFFFFFFFF)
            )
            if key.address is not None and key.address.version == 6:
                mask = int.from_bytes(mask.to_bytes(4, "little"), "big")
            jiffies = (
                p.timeout_jiffies if p.timeout_jiffies is not None else (p.timeout_s or 0) * 250
            )
            line += f"persistent {jiffies} {mask:08X}\n"
        else:
            line += "\n"
        out.append(line)
        for rs in svc.real_servers:
            out.append(
                f"  -> {_addr(rs.address)}:{rs.port:04X}      {rs.forward.ipvsadm_name:<7s} "
                f"{rs.weight:<6d} {rs.active_conns:<10d} {rs.inactive_conns:<10d}\n"
            )
    return "".join(out)


def _proto(protocol: Protocol | None) -> str:
    assert protocol is not None
    return protocol.name


def format_ip_vs_stats(counters: tuple[int, ...], rates: tuple[int, ...]) -> str:
    """/proc/net/ip_vs_stats (64-bit era, K4.1+)."""
    c, r = counters, rates
    return (
        f"{_STATS_HEAD}{c[0]:8X} {c[1]:8X} {c[2]:8X} {c[3]:16X} {c[4]:16X}\n\n"
        f"{_RATES_HEAD}{r[0]:8X} {r[1]:8X} {r[2]:8X} {r[3]:16X} {r[4]:16X}\n"
    )


def write_tree(
    root: Path, services: int, backends: int, conns: int, *, simulated: bool = False
) -> None:
    """A /proc-like tree: `services` TCP services of `backends` real servers and `conns` entries
    (`simulated`: the services a `SimulatedKernel` of that size serves)."""
    net = root / "net"
    net.mkdir(parents=True, exist_ok=True)
    svcs = (
        generated_services(services, backends=backends)
        if simulated
        else _tree_services(services, backends)
    )
    (net / "ip_vs").write_text(format_ip_vs(svcs))
    (net / "ip_vs_stats").write_text(
        format_ip_vs_stats(
            (conns, conns * 10, conns * 9, conns * 6400, conns * 90000),
            (40, 400, 360, 25600, 3600000),
        )
    )
    states = ("ESTABLISHED", "TIME_WAIT", "FIN_WAIT", "SYN_RECV", "CLOSE_WAIT")
    with (net / "ip_vs_conn").open("w") as plain, (net / "ip_vs_conn_sync").open("w") as sync:
        plain.write(_CONN_HEAD)
        sync.write(_SYNC_HEAD)
        for n in range(conns):
            svc = svcs[n % services]
            rs = svc.real_servers[(n // services) % backends]
            assert svc.key.address is not None
            client = 0xC6120000 + n % 65000
            common = (
                f"TCP {client:08X} {1024 + n % 60000:04X} {int(svc.key.address):08X} "
                f"{svc.key.port:04X} {int(rs.address):08X} {rs.port:04X} {states[n % 5]:<11s}"
            )
            plain.write(f"{common} {n % 900:7d}\n")
            sync.write(f"{common} {'SYNC' if n % 7 == 0 else 'LOCAL':<6s} {n % 900:7d}\n")
    vs = root / "sys/net/ipv4/vs"
    vs.mkdir(parents=True, exist_ok=True)
    for name, value in (("am_droprate", "10"), ("sync_threshold", "3\t50"), ("conntrack", "0")):
        (vs / name).write_text(value + "\n")


def _tree_services(services: int, backends: int) -> list[Service]:
    from lvsprobe.model import Forward, RealServer, ServiceFlag, ServiceKey

    base_vip = int(ipaddress.IPv4Address("10.0.0.0"))
    base_rs = int(ipaddress.IPv4Address("172.16.0.0"))
    svcs = []
    for i in range(services):
        vip = ipaddress.IPv4Address(base_vip + i // 100 + 1)
        port = 1000 + i % 100
        rss = tuple(
            RealServer(
                ipaddress.IPv4Address(base_rs + i * backends + j),
                port,
                Forward.MASQ,
                1 + j % 3,
                j,
                10 * j,
            )
            for j in range(backends)
        )
        svcs.append(
            Service(ServiceKey(None, Protocol.TCP, vip, port), "wlc", ServiceFlag.HASHED, None, rss)
        )
    return svcs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _status_mb(pid: int, field: str = "VmHWM") -> float:
    """A size from /proc/PID/status in MB: VmHWM (peak RSS), VmRSS (now)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s(pid: int) -> float:
    """utime + stime of a process (all threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _scrape(url: str, gzip: bool, timeout: float = 300) -> tuple[float, int]:
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"} if gzip else {})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        body = resp.read()
    return time.perf_counter() - started, len(body)


class Exporter:
    """One exporter process on loopback, its scrapes and CPU time counted from the first."""

    def __init__(
        self,
        label: str,
        argv: list[str],
        port: int,
        gzip: bool = False,
        ready_path: str | None = None,
    ) -> None:
        self.label, self.argv, self.port, self.gzip = label, argv, port, gzip
        self.ready_path = ready_path  # answers 200 once started (lvsprobe: after its warm-up)
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.size = 0
        self.idle_mb = float("nan")

    def wait_ready(self, timeout_s: float = 120) -> None:
        """Wait until the exporter serves (and is ready); its RSS then is the idle figure."""
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{self.port}{self.ready_path or '/'}"
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"{self.argv[0]} did not start") from None
                time.sleep(0.1)
        self.idle_mb = _status_mb(self.proc.pid, "VmRSS")

    def scrape(self) -> None:
        before = _cpu_s(self.proc.pid)
        elapsed, self.size = _scrape(self.url, self.gzip)
        self.cpu.append(_cpu_s(self.proc.pid) - before)
        self.times.append(elapsed)

    def figures(self) -> tuple[float, float, float, float, float, int]:
        """(best scrape wall s, least and mean CPU s of a scrape, idle RSS MB, peak RSS MB,
        body bytes). The least CPU is the figure least disturbed by neighbours (as timeit's
        best of N)."""
        cpu_mean = sum(self.cpu) / len(self.cpu)
        peak_mb = _status_mb(self.proc.pid)
        return min(self.times), min(self.cpu), cpu_mean, self.idle_mb, peak_mb, self.size

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def measure_all(exporters: list[Exporter], scrapes: int) -> None:
    """Scrape the exporters in turn, `scrapes` rounds: on a shared machine each then meets
    the same neighbours, so the ratios compare like with like. CPU time is the figure to
    trust there: wall time measures the neighbours too."""
    for exporter in exporters:
        exporter.wait_ready()
    for _ in range(scrapes):
        for exporter in exporters:
            exporter.scrape()


def _lvsprobe(tree: Path, port: int, *extra: str, shim: str = "") -> list[str]:
    """`lvsprobe export` on the tree; `shim`: code run first (simulated_wire.SHIM)."""
    code = shim + "\nimport sys; from lvsprobe.cli import main; sys.argv[0] = 'lvsprobe'; main()"
    return [
        sys.executable,
        "-c",
        code,
        "export",
        "--procfs-root",
        str(tree),
        "--web.listen-address",
        f"127.0.0.1:{port}",
        "--log.level",
        "error",
        *extra,
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--backends", type=int, default=10)
    parser.add_argument("--conns", type=int, default=1_000_000)
    parser.add_argument("--scrapes", type=int, default=3)
    parser.add_argument("--gzip", action="store_true", help="ask for gzip, as Prometheus does")
    parser.add_argument(
        "--netlink", action="store_true", help="lvsprobe reads a simulated kernel by netlink"
    )
    args = parser.parse_args(argv)
    if not os.access(NODE_EXPORTER, os.X_OK):
        print(f"bench_export: {NODE_EXPORTER} missing (apt install prometheus-node-exporter)")
        return
    tmp = Path(tempfile.mkdtemp(prefix="lvsprobe-bench-export-"))
    try:
        tree = tmp / "proc"
        started = time.perf_counter()
        write_tree(tree, args.services, args.backends, args.conns, simulated=args.netlink)
        print(
            f"bench_export: tree {args.services} services x {args.backends} backends, "
            f"{args.conns} conn entries, written in {time.perf_counter() - started:.1f} s"
        )
        shim, wire = "", None
        if args.netlink:
            from bench.simulated_wire import SHIM

            wire_path = str(tmp / "genl.sock")
            wire_script = str(Path(__file__).with_name("simulated_wire.py"))
            wire = subprocess.Popen(
                [sys.executable, wire_script, wire_path, str(args.services), str(args.backends)],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert wire.stdout is not None
            wire.stdout.readline()  # "ready"
            shim = SHIM.format(path=wire_path)
        port = _free_port()
        node_argv = [
            NODE_EXPORTER,
            f"--path.procfs={tree}",
            "--collector.disable-defaults",
            "--collector.ipvs",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        exporters = [Exporter("node_exporter 1.x (ipvs only)", node_argv, port, args.gzip)]
        try:
            via = " (netlink)" if args.netlink else ""
            for label, extra in (
                (f"lvsprobe export{via}", ()),
                ("lvsprobe export --compat node-exporter", ("--compat", "node-exporter")),
                ("lvsprobe export --collector.conns=off", ("--collector.conns", "off")),
            ):
                port = _free_port()
                lvsprobe = _lvsprobe(tree, port, *extra, shim=shim)
                exporters.append(Exporter(label, lvsprobe, port, args.gzip, "/-/ready"))
            load_before = os.getloadavg()[0]
            measure_all(exporters, args.scrapes)
            rows = [(e.label, e.figures()) for e in exporters]
        finally:
            for exporter in exporters:
                exporter.stop()
            if wire is not None:
                wire.kill()
                wire.wait()
        ne = rows[0][1]
        print(
            f"{args.scrapes} scrapes each{' (gzip)' if args.gzip else ''}, taken in turn; "
            f"load average {load_before:.1f} before, "
            f"{os.getloadavg()[0]:.1f} after ({os.cpu_count()} CPUs)"
        )
        print(
            f"{'exporter':40s} {'wall s':>7s} {'CPU s':>7s} {'(mean)':>7s} {'idle MB':>7s} "
            f"{'RSS MB':>7s} {'body MB':>7s} {'wall x':>7s} {'CPU x':>7s} {'(mean)':>7s} "
            f"{'RSS x':>7s}"
        )
        for label, (wall, cpu, cpu_mean, idle, rss, size) in rows:
            print(
                f"{label:40s} {wall:7.2f} {cpu:7.2f} {cpu_mean:7.2f} {idle:7.1f} {rss:7.1f} "
                f"{size / 1e6:7.1f} {wall / ne[0]:7.2f} {cpu / ne[1]:7.2f} "
                f"{cpu_mean / ne[2]:7.2f} {rss / ne[4]:7.2f}"
            )
        print(
            "wall: best scrape; CPU: the least and the mean of the scrapes' CPU times; "
            "idle: RSS once ready; RSS: peak (VmHWM)"
        )
        for exporter in exporters:  # the first scrape is the cold one (imports, first decodes)
            cpu_s = " ".join(f"{s:.2f}" for s in exporter.cpu)
            print(f"CPU s of each scrape, {exporter.label}: {cpu_s}")
        print(f"target: <= {TARGET_RATIO} x node_exporter's scrape time and peak RSS (VmHWM)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
