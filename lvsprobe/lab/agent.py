"""The guest agent: started once per boot by stage2.sh, it serves the host until shutdown.

Runs commands in network namespaces, keeps background processes, reads and writes files (the
control port) and relays TCP connections into namespaces (the mux port). Threads, stdlib only:
Python starts ~15x slower under TCG, so the agent stays small and starts once.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from lvsprobe.lab import protocol as p

CLONE_NEWNET = 0x40000000
SPAWN_DIR = Path("/run/lab/spawn")


def find_port(name: str) -> str:
    """/dev/vportNpM of the virtio-serial port called `name` (no udev: read sysfs)."""
    for entry in Path("/sys/class/virtio-ports").iterdir():
        if (entry / "name").read_text().strip() == name:
            return f"/dev/{entry.name}"
    raise RuntimeError(f"no virtio-serial port named {name}")


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def enter_netns(name: str) -> None:
    """Move the calling thread into network namespace /run/netns/NAME (`ip netns` names)."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def ns_argv(ns: str | None, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv] if ns else list(argv)


class Agent:
    def __init__(self, control: int, mux: int) -> None:
        self.control, self.mux = control, mux
        self.control_lock, self.mux_lock = threading.Lock(), threading.Lock()
        self.spawned: dict[int, subprocess.Popen[bytes]] = {}
        self.next_handle = 1
        self.conns: dict[int, queue.Queue[tuple[int, bytes]]] = {}
        self.stopping = threading.Event()

    # ---- control channel -------------------------------------------------------------
    def send(self, message: dict[str, Any]) -> None:
        with self.control_lock:
            write_all(self.control, p.encode_message(message))

    def serve_control(self) -> None:
        buf = b""
        while not self.stopping.is_set():
            chunk = os.read(self.control, 65536)
            if not chunk:
                time.sleep(0.05)  # host not connected (yet): the port reads EOF
                continue
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                threading.Thread(target=self.handle, args=(line,), daemon=True).start()

    def handle(self, line: bytes) -> None:
        request: dict[str, Any] = {}
        try:
            request = p.decode_message(line)
            reply = getattr(self, "op_" + str(request.get("op")))(request)
            reply.update(id=request.get("id"), ok=True)
        except Exception as exc:
            reply = {"id": request.get("id"), "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        self.send(reply)

    def op_run(self, req: dict[str, Any]) -> dict[str, Any]:
        env = {**os.environ, **req.get("env", {})}
        proc = subprocess.Popen(
            ns_argv(req.get("ns"), req["argv"]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=req.get("cwd") or "/",
            env=env,
            start_new_session=True,
        )
        data = p.unb64(req["input"]) if req.get("input") is not None else None
        try:
            out, err = proc.communicate(data, timeout=req.get("timeout"))
            timed_out = False
        except subprocess.TimeoutExpired:
            self.kill_group(proc)
            out, err = proc.communicate()
            timed_out = True
        return {
            "returncode": proc.returncode,
            "stdout": p.b64(out),
            "stderr": p.b64(err),
            "timed_out": timed_out,
        }

    @staticmethod
    def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(proc.pid, sig)

    def op_spawn(self, req: dict[str, Any]) -> dict[str, Any]:
        SPAWN_DIR.mkdir(parents=True, exist_ok=True)
        with self.control_lock:  # requests run in parallel threads
            handle = self.next_handle
            self.next_handle += 1
        with (
            open(SPAWN_DIR / f"{handle}.out", "wb") as out,
            open(SPAWN_DIR / f"{handle}.err", "wb") as err,
        ):
            proc = subprocess.Popen(
                ns_argv(req.get("ns"), req["argv"]),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=req.get("cwd") or "/",
                env={**os.environ, **req.get("env", {})},
                start_new_session=True,
            )
        self.spawned[handle] = proc
        return {"handle": handle, "pid": proc.pid}

    def spawn_output(self, handle: int) -> dict[str, Any]:
        return {
            "stdout": p.b64((SPAWN_DIR / f"{handle}.out").read_bytes()),
            "stderr": p.b64((SPAWN_DIR / f"{handle}.err").read_bytes()),
        }

    def op_poll(self, req: dict[str, Any]) -> dict[str, Any]:
        proc = self.spawned[req["handle"]]
        return {"returncode": proc.poll(), **self.spawn_output(req["handle"])}

    def op_stop(self, req: dict[str, Any]) -> dict[str, Any]:
        proc = self.spawned.pop(req["handle"])
        if proc.poll() is None:
            self.kill_group(proc, req.get("signal", signal.SIGTERM))
            try:
                proc.wait(req.get("timeout", 5))
            except subprocess.TimeoutExpired:
                self.kill_group(proc)
                proc.wait()
        return {"returncode": proc.returncode, **self.spawn_output(req["handle"])}

    def op_read_file(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"data": p.b64(Path(req["path"]).read_bytes())}

    def op_write_file(self, req: dict[str, Any]) -> dict[str, Any]:
        path = Path(req["path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(p.unb64(req["data"]))
        path.chmod(req.get("mode", 0o644))
        return {}

    def op_views(self, req: dict[str, Any]) -> dict[str, Any]:
        """Snapshots + ipvsadm views of a namespace, read in this (request) thread."""
        from lvsprobe.lab.snapshot import collect

        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            if req.get("ns"):
                enter_netns(req["ns"])
            try:
                views = collect(
                    bool(req.get("procfs")), req.get("conns", "summary"), req["ipvsadm"]
                )
            finally:
                _setns(own)
        finally:
            os.close(own)
        return {"views": views}

    def op_ping(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"uptime_s": float(Path("/proc/uptime").read_text().split()[0])}

    def op_shutdown(self, req: dict[str, Any]) -> dict[str, Any]:
        for proc in self.spawned.values():
            self.kill_group(proc)
        self.stopping.set()
        threading.Timer(0.2, os._exit, args=(0,)).start()
        return {}

    # ---- mux channel -------------------------------------------------------------------
    def send_frame(self, conn_id: int, kind: int, payload: bytes = b"") -> None:
        with self.mux_lock:
            write_all(self.mux, p.encode_frame(conn_id, kind, payload))

    def socket_in(self, ns: str | None, family: int) -> socket.socket:
        """A socket created inside namespace `ns` (setns is per thread; switch and back)."""
        if not ns:
            return socket.socket(family, socket.SOCK_STREAM)
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            enter_netns(ns)
            try:
                return socket.socket(family, socket.SOCK_STREAM)
            finally:
                _setns(own)
        finally:
            os.close(own)

    def serve_mux(self) -> None:
        reader = p.FrameReader()
        while not self.stopping.is_set():
            chunk = os.read(self.mux, 65536)
            if not chunk:
                time.sleep(0.05)
                continue
            for conn_id, kind, payload in reader.feed(chunk):
                self.on_frame(conn_id, kind, payload)

    def on_frame(self, conn_id: int, kind: int, payload: bytes) -> None:
        """Hand a frame to its connection's thread (frames may arrive before the connect
        finished: the queue keeps them in order)."""
        if kind == p.OPEN:
            frames: queue.Queue[tuple[int, bytes]] = queue.Queue()
            self.conns[conn_id] = frames
            threading.Thread(
                target=self.relay, args=(conn_id, json.loads(payload), frames), daemon=True
            ).start()
        elif conn_id in self.conns:
            self.conns[conn_id].put((kind, payload))

    def relay(self, conn_id: int, target: dict[str, Any], frames: queue.Queue[Any]) -> None:
        """One forwarded connection: connect inside the namespace, then host frames -> socket
        here and socket -> host frames in a helper thread."""
        host = target.get("host", "127.0.0.1")
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = self.socket_in(target.get("ns"), family)
            sock.settimeout(10)
            sock.connect((host, int(target["port"])))
            sock.settimeout(None)
        except OSError as exc:
            self.conns.pop(conn_id, None)
            self.send_frame(conn_id, p.CLOSE, f"connect {host}:{target['port']}: {exc}".encode())
            return
        threading.Thread(target=self.pump, args=(conn_id, sock), daemon=True).start()
        try:
            while True:
                kind, payload = frames.get()
                if kind == p.DATA:
                    sock.sendall(payload)
                elif kind == p.EOF:
                    sock.shutdown(socket.SHUT_WR)
                else:
                    break
        except OSError as exc:
            self.send_frame(conn_id, p.CLOSE, str(exc).encode())
        finally:
            self.conns.pop(conn_id, None)
            sock.close()

    def pump(self, conn_id: int, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            self.send_frame(conn_id, p.DATA, data)
        if conn_id in self.conns:
            self.send_frame(conn_id, p.EOF)


def main() -> None:
    control = os.open(find_port(p.CONTROL_PORT), os.O_RDWR)
    mux = os.open(find_port(p.MUX_PORT), os.O_RDWR)
    agent = Agent(control, mux)
    threading.Thread(target=agent.serve_mux, daemon=True).start()
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    agent.send({"id": 0, "event": "ready", "uptime_s": uptime, "pid": os.getpid()})
    agent.serve_control()


if __name__ == "__main__":
    main()
