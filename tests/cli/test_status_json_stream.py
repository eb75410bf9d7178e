"""`status --json` is written a service at a time (a line each), and is the same document."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

from click.testing import CliRunner

from lvsprobe.cli import cli
from lvsprobe.cli.status import WRITE_CHARS, write_json
from lvsprobe.kernel.genl.simulated import SimulatedKernel, generated_services
from lvsprobe.kernel.genl.socket import IPVSNetlink
from lvsprobe.model import Snapshot
from lvsprobe.snapshot_json import snapshot_json_text, snapshot_to_json
from lvsprobe.sources import Target, read_snapshot


def test_streamed_text_is_the_whole_document_a_service_a_line(nat_proc: Path) -> None:
    snap = read_snapshot(Target(procfs_root=nat_proc), conns="summary")
    assert len(snap.services) > 1
    for services in (snap.services, snap.services[:1], ()):
        part = replace(snap, services=services)
        text = "".join(snapshot_json_text(part))
        assert json.loads(text) == json.loads(json.dumps(snapshot_to_json(part)))
        lines = text.splitlines()
        at = lines.index('  "services": [') if services else -1
        for offset, service in enumerate(snapshot_to_json(part)["services"], start=1):
            assert json.loads(lines[at + offset].strip().rstrip(",")) == service
    # everything but the services as `json.dumps(..., indent=2)` writes it
    none = replace(snap, services=())
    assert "".join(snapshot_json_text(none)) == json.dumps(snapshot_to_json(none), indent=2)


def test_status_json_through_the_cli(nat_proc: Path) -> None:
    result = CliRunner().invoke(cli, ["status", "--procfs-root", str(nat_proc), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    snap = read_snapshot(Target(procfs_root=nat_proc), conns="summary")
    assert doc["services"] == snapshot_to_json(snap)["services"]


class _Writes(io.StringIO):
    """A text stream that keeps the size of each write."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def write(self, text: str) -> int:
        self.sizes.append(len(text))
        return super().write(text)


def test_json_is_written_in_few_large_writes() -> None:
    """A write per service was a write(2) per service: a round trip each on a 9p share."""
    services = IPVSNetlink.connect(SimulatedKernel(generated_services(500))).services()
    snap = Snapshot(loaded=True, via="netlink", services=services)
    out = _Writes()
    write_json(snap, out)
    assert out.getvalue() == "".join(snapshot_json_text(snap)) + "\n"
    assert len(out.getvalue()) > 2 * WRITE_CHARS
    assert len(out.sizes) <= len(out.getvalue()) // WRITE_CHARS + 1
    assert all(size >= WRITE_CHARS for size in out.sizes[:-1])
