"""A traffic tool run INSIDE the guest (client namespace): each request from a chosen source
address, tallied by the real server that answered. One Python start per call, so a call does a
whole batch and prints one JSON document.

    python -m lvsprobe.lab.client http VIP --sources 198.18.16.1,198.18.16.2 --rounds 3
    python -m lvsprobe.lab.client ftp VIP --sources 198.18.16.1 --active --passive
    python -m lvsprobe.lab.client udp VIP --sources 198.18.16.1 --rounds 3
    python -m lvsprobe.lab.client tcp VIP --port 7 --sources 198.18.16.1  (banner word)
    python -m lvsprobe.lab.client batch < jobs.json   (a list of {"proto", "vip", "sources",
                                                       "port", "rounds", ...}: one start)

Output: {"tally": {"rs1": 10, ...}, "per_source": {SRC: ["rs1", ...]}, "errors": [...],
         "transfers": [{"source", "mode", "backend", "sha256", "bytes", "pasv_reply"}]}
"""

from __future__ import annotations

import argparse
import collections
import ftplib
import hashlib
import json
import socket
import sys
from typing import Any

TIMEOUT_S = 15.0


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def http_get(vip: str, port: int, source: str, path: str = "/") -> str:
    """One HTTP/1.0 GET bound to `source`; the X-Backend header's value."""
    with socket.socket(_family(vip), socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT_S)
        sock.bind((source, 0))
        sock.connect((vip, port))
        host = f"[{vip}]" if ":" in vip else vip
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "x-backend":
            return value.strip()
    raise OSError(f"no X-Backend header in reply: {head[:80]!r}")


def tcp_banner(vip: str, port: int, source: str) -> str:
    """Connect, send one line, return the first word the server sends ('-' if it sends none:
    a TLS server drops a plaintext client); the IPVS connection exists either way."""
    with socket.socket(_family(vip), socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT_S)
        sock.bind((source, 0))
        sock.connect((vip, port))
        sock.sendall(b"hello\n")
        try:
            data = sock.recv(256)
        except ConnectionResetError:
            data = b""
    return data.split(b"\n", 1)[0].split(b" ", 1)[0].decode(errors="replace") or "-"


def udp_echo(vip: str, port: int, source: str) -> str:
    with socket.socket(_family(vip), socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT_S)
        sock.bind((source, 0))
        sock.sendto(b"ping", (vip, port))
        data, peer = sock.recvfrom(65536)
    if peer[0] != vip:
        raise OSError(f"UDP reply came from {peer[0]}, not the VIP")
    return data.split(b" ", 1)[0].decode()


def ftp_get(vip: str, source: str, passive: bool, path: str) -> dict[str, Any]:
    """Anonymous RETR of `path`; passive mode trusts the 227 address (proves the rewrite)."""
    ftp = ftplib.FTP(timeout=TIMEOUT_S, source_address=(source, 0))
    # use the address IN the 227 reply: proves ip_vs_ftp rewrote the RIP to the VIP
    setattr(ftp, "trust_server_pasv_ipv4_address", True)  # noqa: B010 (not in typeshed)
    ftp.connect(vip, 21)
    ftp.login()
    ftp.set_pasv(passive)
    reply = ftp.sendcmd("PASV") if passive else None
    digest, size = hashlib.sha256(), 0

    def take(block: bytes) -> None:
        nonlocal size
        digest.update(block)
        size += len(block)

    first: list[bytes] = []

    def block(data: bytes) -> None:
        if not first:
            first.append(data)
        take(data)

    ftp.retrbinary(f"RETR {path}", block)
    ftp.quit()
    backend = first[0].split(b"served by ", 1)[1].split(b"\n", 1)[0].decode() if first else "?"
    return {
        "source": source,
        "mode": "passive" if passive else "active",
        "backend": backend,
        "sha256": digest.hexdigest(),
        "bytes": size,
        "pasv_reply": reply,
    }


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One batch: `rounds` x every source, for proto http|tcp|udp|ftp against `vip`."""
    proto, vip = job["proto"], job["vip"]
    port = job.get("port") or {"http": 80, "ftp": 21}.get(proto, 7)
    per_source: dict[str, list[str]] = collections.defaultdict(list)
    errors: list[str] = []
    transfers: list[dict[str, Any]] = []
    for _ in range(max(1, min(int(job.get("rounds", 1)), 1000))):
        for source in job["sources"]:
            try:
                if proto == "http":
                    per_source[source].append(http_get(vip, port, source, job.get("path", "/")))
                elif proto == "tcp":
                    per_source[source].append(tcp_banner(vip, port, source))
                elif proto == "udp":
                    per_source[source].append(udp_echo(vip, port, source))
                elif proto == "ftp":
                    wanted = ((False, job.get("active")), (True, job.get("passive")))
                    for passive in [mode for mode, on in wanted if on] or [True]:
                        t = ftp_get(vip, source, passive, job.get("path", "file.bin").lstrip("/"))
                        transfers.append(t)
                        per_source[source].append(t["backend"])
                else:
                    raise ValueError(f"unknown proto {proto!r}")
            except (OSError, ftplib.Error, EOFError) as exc:
                errors.append(f"{source}: {type(exc).__name__}: {exc}")
    tally = collections.Counter(b for served in per_source.values() for b in served)
    return {
        "job": job,
        "tally": dict(sorted(tally.items())),
        "per_source": per_source,
        "errors": errors,
        "transfers": transfers,
    }


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m lvsprobe.lab.client")
    ap.add_argument("proto", choices=("http", "tcp", "udp", "ftp", "batch"))
    ap.add_argument("vip", nargs="?", help="the address to connect to (not with batch)")
    ap.add_argument("--sources", default="", help="comma-separated source addresses")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--port", type=int)
    ap.add_argument("--path", default="/")
    ap.add_argument("--active", action="store_true", help="ftp: active mode (PORT)")
    ap.add_argument("--passive", action="store_true", help="ftp: passive mode (PASV)")
    args = ap.parse_args()
    if args.proto == "batch":  # a JSON list of jobs on stdin; prints a JSON list of results
        print(json.dumps([run_job(job) for job in json.load(sys.stdin)]))
        return
    job = {
        "proto": args.proto,
        "vip": args.vip,
        "port": args.port,
        "sources": [s for s in args.sources.split(",") if s],
        "rounds": args.rounds,
        "path": args.path,
        "active": args.active,
        "passive": args.passive,
    }
    print(json.dumps(run_job(job)))


if __name__ == "__main__":
    main()
