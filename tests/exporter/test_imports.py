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
from unittest.mock import patch

from lvsprobe.dashboards.prometheus import free_port
from lvsprobe.kernel.genl import capture
from lvsprobe.kernel.genl.attrs import NLMSG_HDR, nla_align
from lvsprobe.kernel.genl.simulated import SimulatedKernel, generated_services
from lvsprobe.kernel.genl.socket import IPVSNetlink
from lvsprobe.sources import Target, read_snapshot

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
    "numpy",  # netlink dumps are decoded with bytes slices; the conn table here is small
)
# SIGINT ends the export as Ctrl-C does, even when the test runs with SIGINT ignored (in the
# background of a shell); the modules are printed as the process ends. `{shim}`: code run
# before the CLI.
CODE = """
import atexit, signal, sys
{shim}
from lvsprobe.cli import main
signal.signal(signal.SIGINT, signal.default_int_handler)
atexit.register(lambda: print({mark!r}, *sorted(sys.modules), sep="\\n"))
sys.argv[0] = "lvsprobe"
main()
"""
# Reads go by netlink, to a recorded conversation (`_record_netlink_read`), as
# bench/simulated_wire.py's shim sends them to a simulated kernel.
NETLINK_SHIM = """
import dataclasses, lvsprobe.sources
from pathlib import Path
_read = lvsprobe.sources.read_snapshot
def _read_via_capture(target, **options):
    return _read(dataclasses.replace(target, genl_capture=Path({path!r})), **options)
lvsprobe.sources.read_snapshot = _read_via_capture
"""


def _get(url: str, headers: dict[str, str] | None = None) -> bytes:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return bytes(resp.read())


def _loaded_by_export_and_scrapes(shim: str = "") -> list[str]:
    port = free_port()
    argv = ["export", "--procfs-root", str(FIXTURE), "--web.listen-address", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(
        [sys.executable, "-c", CODE.format(shim=shim, mark=MARK), *argv],
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


def _record_netlink_read(kernel: SimulatedKernel, path: Path) -> None:
    """One read of the fixture tree with its services by netlink from `kernel`, written as
    a capture (`capture.parse_conversation`'s format) for an export to read again."""
    lines = []

    class Recording:
        def send(self, data: bytes) -> None:
            lines.append(f"> {data.hex()}")
            kernel.send(data)

        def recv(self) -> bytes:
            datagram = kernel.recv()
            offset = 0
            while offset < len(datagram):
                length = NLMSG_HDR.unpack_from(datagram, offset)[0]
                lines.append(f"< {datagram[offset : offset + length].hex()}")
                offset += nla_align(length)
            return datagram

        def close(self) -> None:
            kernel.close()

    recording = staticmethod(lambda _path: IPVSNetlink.connect(Recording()))
    with patch.object(capture.CapturedIPVS, "from_file", recording):
        snap = read_snapshot(Target(procfs_root=FIXTURE, genl_capture=path))
    assert snap.via == "netlink" and not snap.failures, snap.failures
    path.write_text("\n".join(lines) + "\n", encoding="ascii")


def test_a_netlink_export_of_many_real_servers_loads_no_numpy(tmp_path: Path) -> None:
    """Dumps big enough to be decoded column-wise (and address texts made in bulk) need
    only the standard library."""
    conversation = tmp_path / "ipvs_conversation.hex"
    _record_netlink_read(SimulatedKernel(generated_services(30, backends=10)), conversation)
    loaded = _loaded_by_export_and_scrapes(NETLINK_SHIM.format(path=str(conversation)))
    assert "lvsprobe.kernel.genl.dest_table" in loaded  # it did read by netlink
    assert [name for name in loaded if name == "numpy" or name.startswith("numpy.")] == []
