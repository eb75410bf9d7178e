"""What a plain `lvsprobe export` process loads: what serving and scraping need, and nothing a
flag it was not given would need. Each module costs RSS for the life of a sidecar (ssl alone,
through asyncio, was ~4 MB of libcrypto); an import added at the top of a module the exporter
loads shows up here.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from lvsprobe.dashboards.prometheus import free_port

FIXTURE = Path(__file__).parents[1] / "fixtures/kernel-6.1/nat/proc"
BOUND_S = 60
MARK = "--- modules ---"
# Loaded only by what asks for it: TLS and basic auth (--web.config.file), YAML
# (--web.config.file, --names), keepalived (--collector.keepalived), the landing page (html).
NOT_LOADED = (
    "asyncio",
    "ssl",
    "_ssl",
    "hashlib",
    "_hashlib",
    "email",
    "html",
    "json",
    "yaml",
    "difflib",
    "subprocess",
    "tempfile",
    "ctypes.util",
    "lvsprobe.exporter.webconfig",
    "lvsprobe.exporter.webtls",
    "lvsprobe.exporter.basicauth",
    "lvsprobe.exporter.certdates",
    "lvsprobe.exporter.yamlfile",
    "lvsprobe.exporter.names",
    "lvsprobe.exporter.kube_names",
    "lvsprobe.exporter.keepalived",
    "lvsprobe.keepalived.dump",
    "pandas",
    "scapy",
)
# SIGINT ends the export as Ctrl-C does, even when the test runs with SIGINT ignored (in the
# background of a shell); the modules are printed as the process ends.
CODE = f"""
import atexit, signal, sys
from lvsprobe.cli import main
signal.signal(signal.SIGINT, signal.default_int_handler)
atexit.register(lambda: print({MARK!r}, *sorted(sys.modules), sep="\\n"))
sys.argv[0] = "lvsprobe"
main()
"""


def _get(url: str, headers: dict[str, str] | None = None) -> bytes:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return bytes(resp.read())


def _loaded_by_export_and_scrapes() -> list[str]:
    port = free_port()
    argv = ["export", "--procfs-root", str(FIXTURE), "--web.listen-address", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(
        [sys.executable, "-c", CODE, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + BOUND_S
        while True:
            try:
                _get(f"http://127.0.0.1:{port}/-/ready")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
                time.sleep(0.05)
        assert b"ipvs_up 1" in _get(f"http://127.0.0.1:{port}/metrics")
        _get(f"http://127.0.0.1:{port}/metrics", {"Accept-Encoding": "gzip"})
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=BOUND_S)
    finally:
        proc.kill()
    assert MARK in out, err
    return out.split(MARK, 1)[1].split()


def test_a_plain_export_loads_only_what_serving_and_scraping_need() -> None:
    loaded = _loaded_by_export_and_scrapes()
    assert "lvsprobe.exporter.server" in loaded and "h11" in loaded  # it did serve
    unwanted = [
        name
        for name in loaded
        if any(name == top or name.startswith(top + ".") for top in NOT_LOADED)
    ]
    assert unwanted == []
