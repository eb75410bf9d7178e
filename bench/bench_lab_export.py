"""lvsprobe export vs node_exporter's ipvs collector on the real kernel, at kube-proxy scale.

In the lab VM, for each size: `ipvsadm -R` loads SERVICES x REAL_SERVERS into lvs1
(lvsprobe.lab.scale.restore_text); then ONE guest run of this file (`--guest`, the venv
Python) starts, in lvs1, `lvsprobe export` (netlink, the default), `lvsprobe export
--no-collector.netlink` (/proc) and `prometheus-node-exporter --collector.disable-defaults
--collector.ipvs`, scrapes them in turn over loopback, and reports per exporter: scrape wall
(min/median), process CPU per scrape (/proc/PID/stat utime+stime deltas), peak RSS (VmHWM)
and series count, each both plain and with `Accept-Encoding: gzip` as the Prometheus server
asks (the wall ends when the last byte is in; the client's gunzip is not counted), then
`lvsprobe status --json` vs the text view, and the floor of any netlink reader: the
GET_DEST dumps' syscalls alone, with no decoding. The first scrape of each exporter is a warm-up,
not counted. Figures are guest figures under TCG (~15x slower than the host): compare the
ratios, not the seconds.

    python -m bench lab_export -- --services 2000 --real-servers 10 --scrapes 5
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
READY_TIMEOUT_S = 300.0
SCRAPE_TIMEOUT_S = 900.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def exporters() -> dict[str, list[str]]:
    """Name -> argv, each on its own loopback port."""
    lvsprobe = [sys.executable, "-m", "lvsprobe", "export"]
    return {
        "lvsprobe netlink": [*lvsprobe, "--web.listen-address", "127.0.0.1:9301"],
        "lvsprobe procfs": [
            *lvsprobe,
            "--no-collector.netlink",
            "--web.listen-address",
            "127.0.0.1:9302",
        ],
        "node_exporter": [
            NODE_EXPORTER,
            "--collector.disable-defaults",
            "--collector.ipvs",
            "--web.listen-address=127.0.0.1:9303",
        ],
    }


def _port(argv: list[str]) -> int:
    address = next(a for a in reversed(argv) if "127.0.0.1:" in a)
    return int(address.rsplit(":", 1)[1])


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exporter on :{port} exited {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"exporter on :{port} not listening after {READY_TIMEOUT_S:.0f} s")


MODES = ("plain", "gzip")


def _scrape(port: int, mode: str = "plain") -> tuple[float, int]:
    headers = {"Accept-Encoding": "gzip"} if mode == "gzip" else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=SCRAPE_TIMEOUT_S) as reply:
        body = reply.read()
        encoding = reply.headers.get("Content-Encoding")
    wall_s = time.perf_counter() - started
    if encoding == "gzip":
        body = gzip.decompress(body)
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return wall_s, series


def _cpu_self_s() -> float:
    times = os.times()
    return times.user + times.system


def netlink_floor(runs: int = 3) -> dict[str, float]:
    """Every service's GET_DEST dump sent and received whole, nothing decoded (the kernel's
    part of a netlink read and the least Python around it): best of `runs`."""
    from lvsprobe.kernel.genl.requests import GetDestRequests
    from lvsprobe.kernel.genl.socket import NETLINK_GENERIC, RECV_BUFSIZE, IPVSNetlink

    with IPVSNetlink.open() as reader:
        keys = [svc.key for svc in reader.services()]
        encode = GetDestRequests(reader.family_id).encode
    requests = [encode(seq, key) for seq, key in enumerate(keys, 1)]
    best = {"wall_s": float("inf"), "cpu_s": float("inf"), "recvs": 0, "dumps": len(keys)}
    for _ in range(runs):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        sock.bind((0, 0))
        buf = bytearray(RECV_BUFSIZE)
        recvs, wall0, cpu0 = 0, time.perf_counter(), _cpu_self_s()
        for request in requests:
            sock.send(request)
            while True:
                sock.recv_into(buf)
                recvs += 1
                if buf[4] | buf[5] << 8 in (2, 3):  # NLMSG_ERROR, NLMSG_DONE: the dump ended
                    break
        best["wall_s"] = min(best["wall_s"], round(time.perf_counter() - wall0, 3))
        best["cpu_s"] = min(best["cpu_s"], round(_cpu_self_s() - cpu0, 3))
        best["recvs"] = recvs
        sock.close()
    return best


def guest(scrapes: int, out_dir: Path) -> dict[str, Any]:
    """In the director's namespace: every exporter measured, then status --json vs text."""
    from lvsprobe.lab.scale import timed_cli

    argvs = exporters()
    procs = {
        name: subprocess.Popen(argv, stderr=subprocess.DEVNULL) for name, argv in argvs.items()
    }
    results: dict[str, Any] = {}
    try:
        for name, proc in procs.items():
            _wait_ready(_port(argvs[name]), proc)
            _scrape(_port(argvs[name]))  # warm-up: imports, first decode
        samples: dict[tuple[str, str], list[tuple[float, float, int]]] = {
            (name, mode): [] for name in procs for mode in MODES
        }
        for _ in range(scrapes):
            for (name, mode), taken in samples.items():
                pid = procs[name].pid
                cpu_before = _cpu_s(pid)
                wall_s, series = _scrape(_port(argvs[name]), mode)
                taken.append((wall_s, _cpu_s(pid) - cpu_before, series))
        for (name, mode), taken in samples.items():
            walls = [s[0] for s in taken]
            results[f"{name} {mode}"] = {
                "argv": " ".join(a.rsplit("/", 1)[-1] for a in argvs[name]),
                "wall_min_s": round(min(walls), 3),
                "wall_median_s": round(statistics.median(walls), 3),
                "cpu_per_scrape_s": round(statistics.median(s[1] for s in taken), 3),
                "peak_rss_mb": round(_peak_rss_mb(procs[name].pid), 1),
                "series": taken[-1][2],
            }
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(timeout=30)
    results["netlink floor"] = netlink_floor()
    text = ["status", "--exact", "--stats", "--no-conns"]
    results["status text"] = timed_cli(text, out_dir / "status.txt")
    results["status --json"] = timed_cli(
        ["status", "--json", "--no-conns"], out_dir / "status.json"
    )
    return results


def report(size: str, results: dict[str, Any]) -> None:
    print(f"-- {size}")
    for mode in MODES:
        _report_mode(mode, results)
    floor, node_cpu_s = results["netlink floor"], results["node_exporter gzip"]["cpu_per_scrape_s"]
    print(f"  netlink floor     {floor['dumps']} dumps, {floor['recvs']} recvs: wall "
          f"{floor['wall_s']:.2f} s  cpu {floor['cpu_s']:.2f} s "
          f"({floor['cpu_s'] / max(node_cpu_s, 1e-3):.2f}x node_exporter's CPU)")  # fmt: skip
    for name in ("status text", "status --json"):
        r = results[name]
        print(f"  {name:17} wall {r['wall_s']:.2f} s  cpu {r['cpu_s']:.2f} s  "
              f"peak RSS {r['peak_rss_mb']:.0f} MB")  # fmt: skip


def _report_mode(mode: str, results: dict[str, Any]) -> None:
    print(f"  scraped {mode}:")
    node = results[f"node_exporter {mode}"]
    for name in ("lvsprobe netlink", "lvsprobe procfs", "node_exporter"):
        r = results[f"{name} {mode}"]
        ratio = (
            f"x node: wall {r['wall_median_s'] / node['wall_median_s']:.2f}, "
            f"cpu {r['cpu_per_scrape_s'] / max(node['cpu_per_scrape_s'], 1e-3):.2f}, "
            f"rss {r['peak_rss_mb'] / node['peak_rss_mb']:.2f}"
        )
        print(f"  {name:17} wall min/median {r['wall_min_s']:.2f}/{r['wall_median_s']:.2f} s  "
              f"cpu/scrape {r['cpu_per_scrape_s']:.2f} s  peak RSS {r['peak_rss_mb']:.0f} MB  "
              f"{r['series']} series  ({ratio})")  # fmt: skip
        print(f"    {r['argv']}")


def _load() -> str:
    """The host's load (other VMs and builds make the guest's figures noisier)."""
    one, five, fifteen = os.getloadavg()
    return f"host load {one:.1f}/{five:.1f}/{fifteen:.1f} on {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--services", default="2000", help="comma-separated sizes")
    parser.add_argument("--real-servers", type=int, default=10)
    parser.add_argument("--scrapes", type=int, default=5)
    parser.add_argument("--guest", metavar="OUT_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.guest:
        print(json.dumps(guest(args.scrapes, Path(args.guest))))
        return
    from lvsprobe.lab.lab import Lab
    from lvsprobe.lab.scale import restore_text

    with tempfile.TemporaryDirectory(prefix="bench-lab-export-") as tmp:
        shared = Path(tmp)
        with Lab(shared_dir=shared) as lab:
            print(f"  lab up ({lab.accel}, {lab.cpus} vCPUs, {_load()})", flush=True)
            for services in (int(part) for part in args.services.split(",")):
                restore = shared / "load.ipvsadm"
                restore.write_text(restore_text(services, args.real_servers))
                started = time.monotonic()
                # lvs2's services out: /proc readers in lvs1 would skip as many (test_scale.py)
                lab.run("lvs2", ["ipvsadm", "-C"], timeout=300).check()
                load = f"ipvsadm -C && ipvsadm -R < {restore}"
                lab.sh("lvs1", load, timeout=1800).check()
                print(f"  loaded {services} x {args.real_servers} in "
                      f"{time.monotonic() - started:.0f} s", flush=True)  # fmt: skip
                argv = [sys.executable, __file__, "--guest", str(shared)]
                argv += ["--scrapes", str(args.scrapes)]
                result = lab.run("lvs1", argv, timeout=3600).check()
                report(f"{services} x {args.real_servers}", json.loads(result.stdout))
                print(f"  after the scrapes: {_load()}", flush=True)
            lab.run("lvs1", ["ipvsadm", "-C"], timeout=300)


if __name__ == "__main__":
    main()
