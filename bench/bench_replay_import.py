"""pcap import speed: `lvsprobe replay import`'s fast path vs `tshark -q -z conv,tcp`, on a
generated capture of >= 1M packets (Ethernet/IPv4/TCP, 50k flows). Also measures the readers
the fast path was chosen over (dpkt's Ethernet decode, scapy's RawPcapReader). Prints packets
per second and the ratio to tshark (target >= 1.0).

    python -m bench replay_import [--packets N]
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from lvsprobe.replay.pcapimport import read_capture

PACKETS_PER_FLOW = 20


def _packet(src: int, dst: int, sport: int, dport: int, flags: int, payload: bytes) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, flags, 65535, 0, 0) + payload
    ip = struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, src, dst)
    eth = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"
    return eth + ip + tcp


def make_capture(path: Path, packets: int) -> int:
    """A pcap of `packets` packets: flows of SYN, SYN-ACK, ACK, a request, replies, FINs."""
    flows = packets // PACKETS_PER_FLOW
    server = (198 << 24) | (18 << 16) | (1 << 8) | 100
    request = b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n"
    reply = b"x" * 200
    written = 0
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        for n in range(flows):
            client = (198 << 24) | (18 << 16) | (16 << 8) + n % 4000
            sport = 1024 + n % 60000
            shapes = [
                (True, 0x02, b""),
                (False, 0x12, b""),
                (True, 0x10, b""),
                (True, 0x18, request),
            ]
            shapes += [(False, 0x10, reply)] * (PACKETS_PER_FLOW - 6)
            shapes += [(True, 0x11, b""), (False, 0x11, b"")]
            for k, (from_client, flags, payload) in enumerate(shapes):
                if from_client:
                    frame = _packet(client, server, sport, 80, flags, payload)
                else:
                    frame = _packet(server, client, 80, sport, flags, payload)
                ts = 1_700_000_000 + n // 1000
                out.write(struct.pack("<IIII", ts, (n % 1000) * 1000 + k, len(frame), len(frame)))
                out.write(frame)
                written += 1
    return written


def _timed(label: str, packets: int, func: object) -> float:
    started = time.perf_counter()
    func()  # type: ignore[operator]
    elapsed = time.perf_counter() - started
    rate = packets / elapsed
    print(f"  {label:<34} {elapsed:7.2f} s  {rate / 1e6:6.3f} M packets/s")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--packets", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.pcap"
        packets = make_capture(path, args.packets)
        print(f"  capture: {packets} packets, {path.stat().st_size / 1e6:.0f} MB")
        result: list[int] = []
        fast = _timed(
            "lvsprobe fast path (flows)",
            packets,
            lambda: result.append(len(read_capture(path).flows)),
        )
        print(f"  -> {result[0]} flows")

        def dpkt_loop() -> None:
            import dpkt

            with path.open("rb") as fh:
                for _, buf in dpkt.pcap.Reader(fh):
                    dpkt.ethernet.Ethernet(buf)

        _timed("dpkt Reader + Ethernet decode", packets, dpkt_loop)

        def scapy_raw() -> None:
            from scapy.utils import RawPcapReader

            for _ in RawPcapReader(str(path)):
                pass

        _timed("scapy RawPcapReader (no decode)", packets, scapy_raw)
        if shutil.which("tshark") is None:
            print("  tshark not installed: no ratio")
            return
        tshark = _timed(
            "tshark -q -z conv,tcp",
            packets,
            lambda: subprocess.run(
                ["tshark", "-n", "-q", "-z", "conv,tcp", "-r", str(path)],
                check=True,
                capture_output=True,
            ),
        )
        print(f"  ratio lvsprobe/tshark: {fast / tshark:.2f}x (target >= 1.0)")


if __name__ == "__main__":
    main()
