"""`status --json` is written a service at a time (a line each), and is the same document."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from click.testing import CliRunner

from lvsprobe.cli import cli
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
