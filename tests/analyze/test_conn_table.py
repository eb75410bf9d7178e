"""Fairness from the director's connection table (RUN/conn-snapshots), no flow log needed."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from types import SimpleNamespace

from click.testing import CliRunner

from lvsprobe.analyze import hashing
from lvsprobe.cli import cli
from lvsprobe.cli.exit import ExitCode

HEADER = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n"


def hexip(text: str) -> str:
    return f"{int(ipaddress.ip_address(text)):08X}"


def conn_rows(fb: SimpleNamespace, pairs: list[tuple[str, str]]) -> str:
    """Rows in /proc/net/ip_vs_conn's exact layout (docs/kernel/procfs.md#ip_vs_conn)."""
    rows = [
        f"TCP {hexip(c)} {40000 + k:04X} {hexip(fb.vip)} 0050 {hexip(fb.addresses[b])} 0050 "
        f"{'ESTABLISHED':<11} {897:7d}\n"
        for k, (c, b) in enumerate(pairs)
    ]
    return HEADER + "".join(rows)


def run_with_snapshots(fb: SimpleNamespace, pairs: list[tuple[str, str]]) -> Path:
    run = fb.run([], scheduler="sh", weights=(1, 1, 1))
    (run / "flows.parquet").unlink()
    folder = run / "conn-snapshots"
    folder.mkdir()
    half = len(pairs) // 2
    (folder / "0000.txt").write_text(conn_rows(fb, pairs[:half]))
    (folder / "0001.txt").write_text(conn_rows(fb, pairs))  # repeats are one connection
    (folder / "index.json").write_text(
        json.dumps([{"file": "0000.txt", "t_s": 1.0}, {"file": "0001.txt", "t_s": 2.0}])
    )
    return run


def test_sh_checked_client_by_client_from_the_conn_table(fb: SimpleNamespace) -> None:
    table = hashing.sh_table([1, 1, 1])
    clients = [f"198.18.{i // 200}.{i % 200 + 1}" for i in range(120)]
    pairs = [
        (c, fb.names[hashing.sh_pick(table, [1, 1, 1], ipaddress.ip_address(c))])  # type: ignore[index]
        for c in clients
    ]
    run = run_with_snapshots(fb, pairs)
    res = CliRunner().invoke(cli, ["analyze", "fairness", str(run), "--source", "conn-table"])
    assert res.exit_code == ExitCode.OK, res.output
    assert "120/120 flows on the backend" in res.output
    pairs[5] = (pairs[5][0], "rs1" if pairs[5][1] != "rs1" else "rs2")
    run = run_with_snapshots(fb, pairs)
    res = CliRunner().invoke(cli, ["analyze", "fairness", str(run), "--source", "conn-table"])
    assert res.exit_code == ExitCode.CHECK_FAILED, res.output


def test_garbage_snapshot_names_the_file(fb: SimpleNamespace) -> None:
    run = run_with_snapshots(fb, [("198.18.0.1", "rs1")])
    (run / "conn-snapshots" / "0001.txt").write_text(HEADER + "TCP garbage\n")
    res = CliRunner().invoke(cli, ["analyze", "fairness", str(run), "--source", "conn-table"])
    assert res.exit_code == ExitCode.ERROR
    assert "0001.txt" in res.output
