"""`lvsprobe status` on the captured 6.1 tree shows what ipvsadm showed for the same state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lvsprobe.cli import cli

GENL = Path(__file__).parents[1] / "fixtures/kernel-6.1/nat/genl/ipvs_conversation.hex"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["status", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_list_view_equals_ipvsadm_ln_from_procfs_alone(nat_proc: Path, nat_ipvsadm: Path) -> None:
    code, out, err = run("--procfs-root", str(nat_proc), "--no-conns")
    assert code == 0, err
    assert out == (nat_ipvsadm / "ipvsadm_-Ln.txt").read_text()
    # /proc gives the persistence timeout in jiffies: the HZ assumption is said out loud
    assert "CONFIG_HZ=250" in err


@pytest.mark.parametrize(
    ("flags", "capture"),
    [
        (("--stats", "--exact"), "ipvsadm_-Ln_--exact_--stats.txt"),
        (("--stats",), "ipvsadm_-Ln_--stats.txt"),
        (("--thresholds",), "ipvsadm_-Ln_--thresholds.txt"),
        (("--persistent-conn",), "ipvsadm_-Ln_--persistent-conn.txt"),
        ((), "ipvsadm_-Ln.txt"),
    ],
)
def test_views_with_the_netlink_capture_equal_ipvsadm(
    nat_proc: Path, nat_ipvsadm: Path, flags: tuple[str, ...], capture: str
) -> None:
    code, out, err = run(
        "--procfs-root", str(nat_proc), "--genl-capture", str(GENL), "--no-conns", *flags
    )
    assert code == 0, err
    assert out == (nat_ipvsadm / capture).read_text()
    assert err == ""


def test_rate_view_has_ipvsadms_layout(nat_proc: Path, nat_ipvsadm: Path) -> None:
    # rates were captured seconds apart from ipvsadm's run: compare the layout, not values
    code, out, _ = run(
        "--procfs-root", str(nat_proc), "--genl-capture", str(GENL), "--no-conns", "--rate"
    )
    assert code == 0
    expected = (nat_ipvsadm / "ipvsadm_-Ln_--rate.txt").read_text().splitlines()
    got = out.splitlines()
    assert got[:3] == expected[:3]
    assert [line.split()[:2] for line in got[3:]] == [line.split()[:2] for line in expected[3:]]
    assert [len(line) for line in got] == [len(line) for line in expected]


def test_timeout_and_daemon_views(nat_proc: Path, nat_ipvsadm: Path) -> None:
    code, out, _ = run(
        "--procfs-root",
        str(nat_proc),
        "--genl-capture",
        str(GENL),
        "--no-conns",
        "--timeout",
        "--daemon",
    )
    assert code == 0
    assert (nat_ipvsadm / "ipvsadm_-Ln_--timeout.txt").read_text() in out
    assert (nat_ipvsadm / "ipvsadm_-Ln_--daemon_master.txt").read_text() in out


def test_conn_summary_counts_the_captured_table(nat_proc: Path, nat_ipvsadm: Path) -> None:
    code, out, _ = run("--procfs-root", str(nat_proc))
    assert code == 0
    rows = (nat_proc / "net/ip_vs_conn").read_text().splitlines()[1:]
    assert f"Connection table: {len(rows)} entries" in out
    time_wait = sum(1 for r in rows if r.split()[0] == "TCP" and r.split()[7] == "TIME_WAIT")
    assert any(line.split() == ["TCP", "TIME_WAIT", str(time_wait)] for line in out.splitlines())


def test_json_schema(nat_proc: Path) -> None:
    code, out, _ = run("--procfs-root", str(nat_proc), "--genl-capture", str(GENL), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["via"] == "netlink"
    svc = next(s for s in doc["services"] if s["port"] == 80 and s["family"] == "inet")
    assert {
        "protocol",
        "address",
        "port",
        "fwmark",
        "scheduler",
        "persistent",
        "stats",
        "rates",
        "backends",
    } <= svc.keys()
    assert svc["protocol"] == "TCP" and svc["address"] == "198.18.1.100"
    assert svc["stats"]["conns"] == 400
    backend = svc["backends"][0]
    assert {
        "address",
        "port",
        "forward",
        "weight",
        "active_conns",
        "inactive_conns",
        "persistent_conns",
        "stats",
        "rates",
    } <= backend.keys()
    ftp = next(s for s in doc["services"] if s["port"] == 21)
    assert ftp["persistent"]["timeout_s"] == 120
    assert doc["conns"]["total"] == len((nat_proc / "net/ip_vs_conn").read_text().splitlines()) - 1


def test_ipvs_not_loaded_is_one_line_and_exit_1(tmp_path: Path) -> None:
    code, out, err = run("--procfs-root", str(tmp_path))
    assert code == 1
    assert out == ""
    assert err.strip().endswith("IPVS is not loaded in procfs tree " + str(tmp_path))


def test_exclusive_targets_are_usage_errors(nat_proc: Path) -> None:
    code, _, err = run("--procfs-root", str(nat_proc), "--netns", "x")
    assert code == 2
    assert "exclude each other" in err


def test_malformed_file_is_reported_not_a_traceback(tmp_path: Path, nat_proc: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net/ip_vs").write_text("IP Virtual Server version 1.2.1 (size=4096)\ngarbage\n")
    code, _out, err = run("--procfs-root", str(tmp_path), "--no-conns")
    assert code == 1
    assert "Traceback" not in err
    assert "net/ip_vs line 2" in err
