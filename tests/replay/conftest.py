"""Real servers on loopback for replay tests (no VM): each names itself like the lab's
backends do. 127.0.0.0/8 is all local, so 127.0.0.2… are a free client address pool."""

from __future__ import annotations

import shutil
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SERVER = "127.0.0.1"


@dataclass
class Servers:
    http: int
    tcp: int
    udp: int
    tls: int
    ftp: int | None
    ftp_file: bytes = b""


class _HttpHandler(socketserver.StreamRequestHandler):
    name = "rs1"

    def handle(self) -> None:
        while True:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = self.rfile.readline(65536)
                if not line:
                    return
                head += line
            length = 0
            keep = True
            for raw in head.decode("latin-1").split("\r\n")[1:]:
                key, _, value = raw.partition(":")
                if key.lower() == "content-length":
                    length = int(value)
                if key.lower() == "connection" and value.strip().lower() == "close":
                    keep = False
            if length:
                self.rfile.read(length)
            path = head.split(b" ", 2)[1].decode()
            if path == "/missing":
                self.wfile.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                continue
            body = f"{self.name} {self.client_address[0]}\n".encode()
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nX-Backend: "
                + self.name.encode()
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            if not keep:
                return


class _TcpEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(b"rs2 echo\n")
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _UdpEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        sock.sendto(b"rs3 " + data, self.client_address)


class _Threaded(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _TlsServer(_Threaded):
    context: ssl.SSLContext

    def get_request(self) -> tuple[socket.socket, object]:
        sock, addr = super().get_request()
        return self.context.wrap_socket(sock, server_side=True), addr


def _tls_context(tmp: Path) -> ssl.SSLContext:
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=lvsprobe-test",
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def _serve(server: socketserver.BaseServer) -> None:
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()


def _vsftpd(tmp: Path) -> tuple[subprocess.Popen[bytes] | None, int | None, bytes]:
    if shutil.which("vsftpd") is None:
        return None, None, b""
    root, empty = tmp / "ftproot", tmp / "ftpempty"
    root.mkdir()
    empty.mkdir()
    content = b"file on rs1\n" + bytes(range(256)) * 40
    (root / "hello.txt").write_bytes(content)
    for p in (tmp, root, empty):
        p.chmod(0o755)
    (root / "hello.txt").chmod(0o644)
    with socket.socket() as probe:
        probe.bind((SERVER, 0))
        port = probe.getsockname()[1]
    conf = tmp / "vsftpd.conf"
    conf.write_text(
        f"listen=YES\nlisten_address={SERVER}\nlisten_port={port}\nlisten_ipv6=NO\n"
        "background=NO\nanonymous_enable=YES\nlocal_enable=NO\n"
        f"anon_root={root}\nsecure_chroot_dir={empty}\nconnect_from_port_20=NO\n"
        "pasv_enable=YES\npasv_min_port=31000\npasv_max_port=31999\nseccomp_sandbox=NO\n"
        "ftpd_banner=rs1 lvsprobe test ftp\nxferlog_enable=NO\nmax_per_ip=0\nmax_clients=0\n"
    )
    proc = subprocess.Popen(
        ["vsftpd", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(100):
        with socket.socket() as probe:
            if probe.connect_ex((SERVER, port)) == 0:
                return proc, port, content
        time.sleep(0.05)
    proc.kill()
    return None, None, b""


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    tmp = tmp_path_factory.mktemp("replay-servers")
    http = _Threaded((SERVER, 0), _HttpHandler)
    tcp = _Threaded((SERVER, 0), _TcpEcho)
    udp = socketserver.ThreadingUDPServer((SERVER, 0), _UdpEcho)
    tls = _TlsServer((SERVER, 0), _HttpHandler)
    tls.context = _tls_context(tmp)
    all_servers: list[socketserver.BaseServer] = [http, tcp, udp, tls]
    for server in all_servers:
        _serve(server)
    ftp_proc, ftp_port, content = _vsftpd(tmp)
    try:
        yield Servers(
            http=http.server_address[1],
            tcp=tcp.server_address[1],
            udp=udp.server_address[1],
            tls=tls.server_address[1],
            ftp=ftp_port,
            ftp_file=content,
        )
    finally:
        for server in all_servers:
            server.shutdown()
            server.server_close()
        if ftp_proc is not None:
            ftp_proc.terminate()
            ftp_proc.wait(10)
