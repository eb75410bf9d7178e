"""The real-server backends: ONE asyncio process per real server (Python starts slowly under
TCG), each answer carrying the server's id so a client can tell who served it.

* HTTP on 80: body `ID CLIENT_IP\\n`, header `X-Backend: ID`; HTTP/1.1 keep-alive;
  `GET /bytes/N` returns N bytes; `GET /delay/MS` answers after MS milliseconds.
* TLS on 443: the same HTTP, over TLS with the lab's self-signed certificate. Each process has
  its own session cache and ticket key: resumption works when a client returns to the same
  server (persistence), not across servers.
* TCP echo on 7: a banner line `ID\\n`, then every byte back.
* UDP echo on 7: `ID ` + the datagram, sent from the address it was sent to (DR/TUN: the VIP).
* FTP: vsftpd (started beside this process) serves `ftp_file(ID)` as /file.bin, which this
  process writes at start.

    python -m lvsprobe.lab.backends --id rs1 --dir /run/lab/cluster/rs1 --cert C --key K

(The cluster build starts them through `lvsprobe.lab.launcher`, which forks one per server.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import socket
import ssl
import struct
from pathlib import Path

FTP_FILE = "file.bin"
IP_PKTINFO = 8  # <linux/in.h>; not in every typeshed
FTP_FILE_SIZE = 256 * 1024
MAX_BODY = 64 * 1024 * 1024


def ftp_file(backend_id: str, size: int = FTP_FILE_SIZE) -> bytes:
    """The FTP test file of a real server: deterministic, so tests know its sha256."""
    header = f"lvsprobe lab ftp file served by {backend_id}\n".encode()
    blocks, counter = [header], 0
    total = len(header)
    while total < size:
        block = hashlib.sha256(f"{backend_id}:{counter}".encode()).digest()
        blocks.append(block)
        total += len(block)
        counter += 1
    return b"".join(blocks)[:size]


def _peer_ip(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return str(peer[0]).removeprefix("::ffff:") if peer else "?"


async def _http(
    backend_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    client = _peer_ip(writer)
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split()
            method, path, version = [*parts, "", "", ""][:3]
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
            }
            length = int(headers.get("content-length", "0") or 0)
            if length:
                await reader.readexactly(min(length, MAX_BODY))
            body = f"{backend_id} {client}\n".encode()
            if path.startswith("/bytes/"):
                body = (body * (int(path[7:] or 0) // len(body) + 1))[
                    : min(int(path[7:] or 0), MAX_BODY)
                ]
            elif path.startswith("/delay/"):
                await asyncio.sleep(min(int(path[7:] or 0), 60_000) / 1000)
            keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            head_out = (
                f"{version or 'HTTP/1.0'} 200 OK\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\nX-Backend: {backend_id}\r\n"
                f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
            )
            writer.write(head_out.encode() + (b"" if method == "HEAD" else body))
            await writer.drain()
            if not keep:
                return
    except (OSError, ValueError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def _echo(
    backend_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        writer.write(f"{backend_id}\n".encode())
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


class UdpEcho:
    """UDP echo answering from the very address the datagram was sent to (IP_PKTINFO)."""

    def __init__(self, backend_id: str, family: int) -> None:
        self.prefix = f"{backend_id} ".encode()
        self.family = family
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        if family == socket.AF_INET6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            self.sock.bind(("::", 7))
        else:
            self.sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            self.sock.bind(("0.0.0.0", 7))

    def on_readable(self) -> None:
        try:
            data, ancdata, _, peer = self.sock.recvmsg(65536, 256)
        except BlockingIOError:
            return
        reply_cmsg = []
        for level, kind, raw in ancdata:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                _, _, dst = struct.unpack("=i4s4s", raw[:12])  # ifindex, spec_dst, addr
                reply_cmsg = [(level, kind, struct.pack("=i4s4s", 0, dst, b"\0" * 4))]
            elif level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                dst6 = raw[:16]
                reply_cmsg = [(level, kind, dst6 + struct.pack("=I", 0))]
        with contextlib.suppress(OSError):  # the client went away: nothing to tell
            self.sock.sendmsg([self.prefix + data], reply_cmsg, 0, peer)


async def serve(backend_id: str, state_dir: Path, cert: Path | None, key: Path | None) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    ftp_dir = state_dir / "ftp"
    ftp_dir.mkdir(exist_ok=True)
    (ftp_dir / FTP_FILE).write_bytes(ftp_file(backend_id))
    loop = asyncio.get_running_loop()

    async def http(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _http(backend_id, r, w)

    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _echo(backend_id, r, w)

    servers = [
        await asyncio.start_server(http, host=None, port=80, backlog=1024),
        await asyncio.start_server(echo, host=None, port=7, backlog=1024),
    ]
    if cert is not None and key is not None:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
        servers.append(await asyncio.start_server(http, host=None, port=443, ssl=tls, backlog=1024))
    for family in (socket.AF_INET, socket.AF_INET6):
        udp = UdpEcho(backend_id, family)
        loop.add_reader(udp.sock.fileno(), udp.on_readable)
    (state_dir / "ready").write_text("ok\n")
    await asyncio.gather(*(s.serve_forever() for s in servers))


def serve_forever(
    backend_id: str, state_dir: Path, cert: str | Path | None, key: str | Path | None
) -> None:
    """Run one real server's backends until killed."""
    asyncio.run(
        serve(backend_id, Path(state_dir), Path(cert) if cert else None, Path(key) if key else None)
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--id", required=True, help="the id every answer carries (rs1, rs2, ...)")
    ap.add_argument("--dir", required=True, type=Path, help="state dir (ftp root, ready file)")
    ap.add_argument("--cert", type=Path, help="TLS certificate (PEM); no TLS without it")
    ap.add_argument("--key", type=Path, help="TLS private key (PEM)")
    args = ap.parse_args()
    serve_forever(args.id, args.dir, args.cert, args.key)


if __name__ == "__main__":
    main()
