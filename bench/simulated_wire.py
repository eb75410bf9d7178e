"""The simulated 6.1 kernel (`SimulatedKernel`) served to another process, for `bench export
--netlink`: an `lvsprobe export` process then reads generic netlink as from a kernel, and its
peak RSS and CPU time are its own (the kernel's encoded records live in this process).

One unix SOCK_SEQPACKET connection is one netlink socket: a message `S` + bytes is a send(),
a message `R` asks for the next datagram, which comes back as one message. `SHIM` is the code
an exporter process runs before the CLI: a Target's reads go through a connection to this
server (netlink) and through the --procfs-root tree (everything else), as a live read does.

    python -m bench.simulated_wire SOCKET_PATH SERVICES BACKENDS   # prints "ready"
"""

from __future__ import annotations

import socket
import sys

from lvsprobe.kernel.genl.simulated import SimulatedKernel, generated_services

SHIM = """
import dataclasses, socket
from pathlib import Path
import lvsprobe.sources
from lvsprobe.kernel.genl import capture
from lvsprobe.kernel.genl.socket import IPVSNetlink

class _Wire:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.connect(path)
    def send(self, data):
        self.sock.sendall(b"S" + data)
    def recv(self):
        self.sock.sendall(b"R")
        return self.sock.recv(1 << 16)
    def close(self):
        self.sock.close()

_read = lvsprobe.sources.read_snapshot
def _read_via_wire(target, **options):
    return _read(dataclasses.replace(target, genl_capture=Path({path!r})), **options)
lvsprobe.sources.read_snapshot = _read_via_wire
capture.CapturedIPVS.from_file = staticmethod(lambda path: IPVSNetlink.connect(_Wire(str(path))))
"""


def serve(path: str, kernel: SimulatedKernel) -> None:
    """Answer one connection at a time, for ever (the bench kills this process)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(8)
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        with conn:
            while message := conn.recv(1 << 16):
                if message[:1] == b"S":
                    kernel.send(message[1:])
                else:
                    conn.sendall(kernel.recv())
        kernel.close()


def main(argv: list[str]) -> None:
    path, services, backends = argv[0], int(argv[1]), int(argv[2])
    serve(path, SimulatedKernel(generated_services(services, backends=backends)))


if __name__ == "__main__":
    main(sys.argv[1:])
