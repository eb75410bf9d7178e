"""Host ends of the agent's two virtio-serial ports (qemu exposes them as unix sockets).

`Control`: request/response over JSON lines, any number of requests in flight.
`Mux`: `forward(ns, port)` listens on 127.0.0.1 and relays each accepted TCP connection to a
port inside a guest namespace, many connections at once over one port.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
from pathlib import Path
from typing import Any

from lvsprobe.errors import LabError
from lvsprobe.lab import protocol as p


class _Pending:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.reply: dict[str, Any] = {}


class Control:
    """Requests to the guest agent; replies are matched by id."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.ids = itertools.count(1)
        self.pending: dict[int, _Pending] = {}
        self.lock = threading.Lock()
        self.ready = _Pending()
        self.closed = False
        threading.Thread(target=self._read, name="lab-control", daemon=True).start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    message = p.decode_message(line)
                except ValueError:
                    continue  # console noise cannot reach this port; a torn line at boot can
                slot = self.ready if message.get("event") == "ready" else None
                if slot is None:
                    with self.lock:
                        slot = self.pending.pop(int(message.get("id") or 0), None)
                if slot is not None:
                    slot.reply = message
                    slot.done.set()
        self.closed = True
        with self.lock:
            for slot in self.pending.values():
                slot.reply = {"ok": False, "error": "the lab VM went away"}
                slot.done.set()
            self.pending.clear()

    def wait_ready(self, timeout_s: float) -> dict[str, Any] | None:
        return self.ready.reply if self.ready.done.wait(timeout_s) else None

    def request(self, op: str, timeout_s: float | None, **fields: Any) -> dict[str, Any]:
        """Send one request and wait for its reply; LabError if it failed or timed out."""
        slot = _Pending()
        req_id = next(self.ids)
        with self.lock:
            if self.closed:
                raise LabError("the lab VM is not running")
            self.pending[req_id] = slot
        try:
            self.sock.sendall(p.encode_message({"id": req_id, "op": op, **fields}))
        except OSError as exc:
            raise LabError(f"lab agent unreachable: {exc}") from exc
        if not slot.done.wait(timeout_s):
            with self.lock:
                self.pending.pop(req_id, None)
            raise TimeoutError(f"lab agent: no reply to {op!r} within {timeout_s} s")
        if not slot.reply.get("ok"):
            raise LabError(f"lab agent: {op} failed: {slot.reply.get('error')}")
        return slot.reply

    def close(self) -> None:
        self.sock.close()


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.eof_sent = False
        self.eof_received = False


class Mux:
    """TCP relays from host loopback ports into guest namespaces."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.write_lock = threading.Lock()
        self.conns: dict[int, _Conn] = {}
        self.ids = itertools.count(1)
        self.listeners: dict[tuple[str, int, str], socket.socket] = {}
        threading.Thread(target=self._read, name="lab-mux", daemon=True).start()

    def _send(self, conn_id: int, kind: int, payload: bytes = b"") -> None:
        with self.write_lock:
            self.sock.sendall(p.encode_frame(conn_id, kind, payload))

    def forward(self, ns: str, port: int, host: str = "127.0.0.1") -> tuple[str, int]:
        """A 127.0.0.1 address:port whose connections reach `host`:`port` in namespace `ns`."""
        key = (ns, port, host)
        if key not in self.listeners:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", 0))
            listener.listen(64)
            self.listeners[key] = listener
            target = json.dumps({"ns": ns, "port": port, "host": host}).encode()
            threading.Thread(
                target=self._accept, args=(listener, target), name="lab-fwd", daemon=True
            ).start()
        address, bound = self.listeners[key].getsockname()[:2]
        return str(address), int(bound)

    def _accept(self, listener: socket.socket, target: bytes) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            conn_id = next(self.ids)
            self.conns[conn_id] = _Conn(sock)
            try:
                self._send(conn_id, p.OPEN, target)
            except OSError:
                sock.close()
                return
            threading.Thread(target=self._pump, args=(conn_id, sock), daemon=True).start()

    def _pump(self, conn_id: int, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(1 << 16)
            except OSError:
                data = b""
            conn = self.conns.get(conn_id)
            if conn is None:
                return
            try:
                if not data:
                    conn.eof_sent = True
                    self._send(conn_id, p.EOF)
                    self._maybe_close(conn_id, conn)
                    return
                self._send(conn_id, p.DATA, data)
            except OSError:
                return

    def _maybe_close(self, conn_id: int, conn: _Conn) -> None:
        if conn.eof_sent and conn.eof_received and self.conns.pop(conn_id, None) is not None:
            self._send(conn_id, p.CLOSE)
            conn.sock.close()

    def _read(self) -> None:
        reader = p.FrameReader()
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
                frames = reader.feed(chunk) if chunk else None
            except (OSError, ValueError):
                frames = None
            if frames is None:
                break
            for conn_id, kind, payload in frames:
                self._on_frame(conn_id, kind, payload)
        for conn in list(self.conns.values()):
            conn.sock.close()
        self.conns.clear()

    def _on_frame(self, conn_id: int, kind: int, payload: bytes) -> None:
        conn = self.conns.get(conn_id)
        if conn is None:
            return
        try:
            if kind == p.DATA:
                conn.sock.sendall(payload)
            elif kind == p.EOF:
                conn.eof_received = True
                conn.sock.shutdown(socket.SHUT_WR)
                self._maybe_close(conn_id, conn)
            elif kind == p.CLOSE:
                self.conns.pop(conn_id, None)
                conn.sock.close()
        except OSError:
            self.conns.pop(conn_id, None)
            conn.sock.close()
            self._send(conn_id, p.CLOSE)

    def close(self) -> None:
        for listener in self.listeners.values():
            listener.close()
        self.sock.close()
