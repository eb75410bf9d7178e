"""Persistence on synthetic logs: sticky clients, FTP data with control, TLS resumption."""

from __future__ import annotations

from types import SimpleNamespace

from click.testing import CliRunner

from lvsprobe.analyze import inputs
from lvsprobe.analyze.persistence import analyze_persistence, client_net
from lvsprobe.cli import cli
from lvsprobe.cli.exit import ExitCode

PERSIST = {"timeout_s": 300, "timeout_jiffies": None, "prefix_len": 32}


def clients_flows(fb: SimpleNamespace, n_clients: int, per_client: int) -> list:
    recs = []
    k = 0
    for _ in range(per_client):
        for c in range(n_clients):
            recs.append(fb.flow(k, fb.names[c % 3], start_s=1.0 * k, client=f"198.18.0.{c + 1}"))
            k += 1
    return recs


def check(fb: SimpleNamespace, recs: list, **kw: object):  # type: ignore[no-untyped-def]
    run = fb.run(recs, scheduler="rr", weights=(1, 1, 1), persistent=PERSIST)
    loaded = inputs.load_run(run)
    model = inputs.service_model(loaded)
    return analyze_persistence(loaded.flows, model, "svc", **kw)  # type: ignore[arg-type]


def test_sticky_clients_pass(fb: SimpleNamespace) -> None:
    result = check(fb, clients_flows(fb, 6, 4))
    assert result.passed
    assert result.client_nets == 6


def test_client_moving_inside_the_timeout_is_listed(fb: SimpleNamespace) -> None:
    recs = clients_flows(fb, 6, 4)
    recs[13].backend = "rs3" if recs[13].backend != "rs3" else "rs1"
    result = check(fb, recs)
    assert not result.passed
    assert [v.flow_id for v in result.violations] == [13]


def test_moving_after_the_template_expired_is_fine(fb: SimpleNamespace) -> None:
    recs = [
        fb.flow(0, "rs1", 0.0, client="198.18.0.1"),
        fb.flow(1, "rs2", 500.0, client="198.18.0.1"),
    ]
    assert check(fb, recs).passed


def test_netmask_groups_clients(fb: SimpleNamespace) -> None:
    recs = [
        fb.flow(0, "rs1", 0.0, client="198.18.0.1"),
        fb.flow(1, "rs2", 1.0, client="198.18.0.2"),
    ]
    assert check(fb, recs).passed  # /32: two clients
    assert not check(fb, recs, prefix_len=24).passed  # one /24 net: must share
    assert client_net("198.18.0.77", 24) == "198.18.0.0/24"
    assert client_net("2001:2::5", None) == "2001:2::5/128"


def test_ftp_sessions(fb: SimpleNamespace) -> None:
    recs = [
        fb.flow(
            k,
            "rs2",
            1.0 * k,
            kind="ftp-passive",
            ftp_checksum_ok=True,
            ftp_data_client_port=50000 + k,
        )
        for k in range(3)
    ]
    assert check(fb, recs).passed
    recs[1].ftp_checksum_ok = False
    result = check(fb, recs)
    assert not result.passed
    assert result.violations[0].check == "ftp"
    recs[1].ftp_checksum_ok = True
    result = check(fb, recs, data_conns=[(recs[2].client_address, 50002, "rs3")])
    assert [v.reason for v in result.violations] == ["data connection went to rs3"]


def test_tls_resumption(fb: SimpleNamespace) -> None:
    recs = [fb.flow(0, "rs1", 0.0, kind="tls", tls_session_reused=False)]
    recs += [fb.flow(k, "rs1", 1.0 * k, kind="tls", tls_session_reused=True) for k in (1, 2)]
    assert check(fb, recs).passed
    recs[2].backend = "rs2"
    result = check(fb, recs)
    assert {v.check for v in result.violations} >= {"tls"}
    assert not result.passed


def test_cli_exit_codes_and_non_persistent_service(fb: SimpleNamespace) -> None:
    run = fb.run(clients_flows(fb, 3, 2), scheduler="rr", weights=(1, 1, 1))
    res = CliRunner().invoke(cli, ["analyze", "persistence", str(run)])
    assert res.exit_code == ExitCode.ERROR
    assert "not persistent" in res.output
    res = CliRunner().invoke(cli, ["analyze", "persistence", str(run), "--timeout", "300"])
    assert res.exit_code == ExitCode.OK, res.output
    recs = clients_flows(fb, 3, 2)
    recs[4].backend = "rs1"
    run = fb.run(recs, scheduler="rr", weights=(1, 1, 1), persistent=PERSIST)
    res = CliRunner().invoke(cli, ["analyze", "persistence", str(run)])
    assert res.exit_code == ExitCode.CHECK_FAILED, res.output
