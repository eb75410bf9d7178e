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


# --- what status could not see (issue #16) ------------------------------------------------

ASKED = ("--stats", "--daemon", "--timeout", "--no-conns")


def notes(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning: no ")]


def test_procfs_tree_says_what_it_could_not_show(nat_proc: Path) -> None:
    code, out, err = run("--procfs-root", str(nat_proc), *ASKED)
    assert code == 0, err
    # stdout stays ipvsadm's text (dashes for the counters /proc lacks), the note goes to stderr
    assert "TCP  198.18.1.100:80                     -        -" in out
    assert "Timeout" not in out and "sync daemon" not in out
    assert notes(err) == [
        "warning: no per-service counters, timeouts or daemons: "
        "netlink reads a live namespace only; reading /proc only"
    ]


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (("--rate",), "per-service rates"),
        (("--thresholds",), "thresholds"),
        (("--persistent-conn",), "persistent connection counts"),
        (("--daemon",), "daemons"),
    ],
)
def test_each_netlink_only_view_is_named(
    nat_proc: Path, flags: tuple[str, ...], named: str
) -> None:
    code, _, err = run("--procfs-root", str(nat_proc), "--no-conns", *flags)
    assert code == 0
    assert notes(err) == [
        f"warning: no {named}: netlink reads a live namespace only; reading /proc only"
    ]


def test_list_view_from_procfs_lacks_nothing_so_says_nothing(nat_proc: Path) -> None:
    code, _, err = run("--procfs-root", str(nat_proc), "--hz", "250")
    assert code == 0
    assert err == ""


def test_no_netlink_flag_is_the_reason_given(nat_proc: Path) -> None:
    code, _, err = run(
        "--procfs-root",
        str(nat_proc),
        "--no-netlink",
        "--stats",
        "--no-conns",
        "--hz",
        "250",
    )
    assert code == 0
    assert notes(err) == [
        "warning: no per-service counters: netlink turned off; reading /proc only"
    ]


def test_no_cap_net_admin_is_one_line_naming_the_capability(
    nat_proc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lvsprobe.errors import NotPermitted
    from lvsprobe.kernel.genl import capture
    from lvsprobe.kernel.genl.socket import NOT_PERMITTED

    def refused(path: Path) -> None:
        raise NotPermitted(f"{NOT_PERMITTED} (get family: Operation not permitted)")

    monkeypatch.setattr(capture.CapturedIPVS, "from_file", refused)
    code, out, err = run(
        "--procfs-root", str(nat_proc), "--genl-capture", str(GENL), *ASKED, "--hz", "250"
    )
    assert code == 0 and out
    assert err.splitlines() == [
        "warning: no per-service counters, timeouts or daemons: netlink IPVS needs "
        "CAP_NET_ADMIN in the initial user namespace (get family: Operation not permitted); "
        "reading /proc only"
    ]


def test_broken_netlink_is_the_reason_and_not_said_twice(nat_proc: Path, tmp_path: Path) -> None:
    broken = tmp_path / "genl.hex"
    broken.write_text("> zz\n")
    code, _, err = run(
        "--procfs-root", str(nat_proc), "--genl-capture", str(broken), *ASKED, "--hz", "250"
    )
    assert code == 0
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(
        "warning: no per-service counters, timeouts or daemons: netlink failed: "
    )


def test_json_carries_what_was_not_read(nat_proc: Path) -> None:
    code, out, _ = run("--procfs-root", str(nat_proc), "--json")
    assert code == 0
    assert json.loads(out)["unread"] == [
        {
            "parts": [
                "service_stats",
                "service_rates",
                "thresholds",
                "persistent_conns",
                "daemons",
                "timeouts",
            ],
            "reason": "netlink reads a live namespace only",
        }
    ]
    code, out, _ = run("--procfs-root", str(nat_proc), "--genl-capture", str(GENL), "--json")
    assert json.loads(out)["unread"] == []


def test_unread_survives_the_json_round_trip(nat_proc: Path) -> None:
    from lvsprobe.snapshot_json import snapshot_from_json, snapshot_to_json
    from lvsprobe.sources import Target, read_snapshot

    snap = read_snapshot(Target(procfs_root=nat_proc), conns="off")
    assert snapshot_from_json(snapshot_to_json(snap)).unread == snap.unread
