"""The lab VM's plumbing: commands, background processes, files, forwarding, shared dir."""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.lab


def test_run_returns_status_and_both_streams(lab: Any) -> None:
    result = lab.run(None, ["bash", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert lab.run(None, ["cat"], input="fed on stdin").stdout == "fed on stdin"
    assert lab.accel in ("kvm", "tcg") and lab.boot_s > 0


def test_run_in_namespace_and_timeout(lab: Any) -> None:
    lab.ensure()
    rs1 = lab.run("rs1", ["ip", "-br", "-4", "addr", "show", "dev", "e0"]).check().stdout
    assert lab.real_server_addresses[0] in rs1
    assert lab.run(None, ["sleep", "30"], timeout=1).returncode == 124


def test_spawn_stop_and_files(lab: Any) -> None:
    proc = lab.spawn("client", ["bash", "-c", "echo started; exec sleep 60"])
    for _ in range(300):
        if "started" in proc.output()[0]:
            break
        time.sleep(0.2)
    assert proc.poll() is None
    result = proc.stop()
    assert result.returncode == -15 and result.stdout == "started\n"
    lab.write_file("/tmp/lab-test/hello.txt", "hi\n")
    assert lab.read_file("/tmp/lab-test/hello.txt") == b"hi\n"


def test_shared_dir_is_read_write_at_the_same_path(lab: Any) -> None:
    path = Path(lab.shared_dir) / "from-guest.txt"
    lab.run(None, ["bash", "-c", f"echo written in the guest > {path}"]).check()
    assert path.read_text() == "written in the guest\n"


def test_forward_reaches_guest_ports_concurrently(lab: Any) -> None:
    lab.ensure()
    backends: list[str] = []
    errors: list[BaseException] = []

    def fetch(ns: str) -> None:
        try:
            host, port = lab.forward(ns, 80)
            conn = http.client.HTTPConnection(host, port, timeout=60)
            conn.request("GET", "/bytes/100000")
            reply = conn.getresponse()
            body = reply.read()
            assert reply.status == 200 and len(body) == 100000
            backends.append(reply.getheader("X-Backend") or "")
            conn.close()
        except BaseException as exc:  # collected for the main thread
            errors.append(exc)

    threads = [threading.Thread(target=fetch, args=(ns,)) for ns in lab.real_server_names * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sorted(backends) == sorted(lab.real_server_names * 3)


def test_tls_session_resumption_on_the_same_server(lab: Any) -> None:
    lab.ensure()
    ctx = ssl.create_default_context(cadata=lab.tls_certificate_pem)
    ctx.check_hostname = False
    address = lab.forward("rs1", 443)
    session = None
    reused = []
    for _ in range(2):
        with (
            socket.create_connection(address, timeout=60) as raw,
            ctx.wrap_socket(raw, session=session) as tls,
        ):
            tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
            reply = b""
            while chunk := tls.recv(65536):
                reply += chunk
            assert b"X-Backend: rs1" in reply
            reused.append(tls.session_reused)
            session = tls.session  # TLS 1.3: the ticket came with the reply
    assert reused == [False, True]
