"""`status --json` is written a service at a time, and is the same document as before."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from click.testing import CliRunner

from lvsprobe.cli import cli
from lvsprobe.snapshot_json import snapshot_json_text, snapshot_to_json
from lvsprobe.sources import Target, read_snapshot


def test_streamed_text_equals_the_whole_document(nat_proc: Path) -> None:
    snap = read_snapshot(Target(procfs_root=nat_proc), conns="summary")
    assert len(snap.services) > 1
    whole = json.dumps(snapshot_to_json(snap), indent=2)
    assert "".join(snapshot_json_text(snap)) == whole
    one = replace(snap, services=snap.services[:1])
    assert "".join(snapshot_json_text(one)) == json.dumps(snapshot_to_json(one), indent=2)
    none = replace(snap, services=())
    assert "".join(snapshot_json_text(none)) == json.dumps(snapshot_to_json(none), indent=2)


def test_status_json_through_the_cli(nat_proc: Path) -> None:
    result = CliRunner().invoke(cli, ["status", "--procfs-root", str(nat_proc), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    snap = read_snapshot(Target(procfs_root=nat_proc), conns="summary")
    assert doc["services"] == snapshot_to_json(snap)["services"]
