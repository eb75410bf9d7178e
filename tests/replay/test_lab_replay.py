"""The catalogue against the real kernel: every scenario in replays/ runs in the lab's client
namespace through the director and its flow log must show what the scenario promises
(`--check` runs its `expect:` block, which includes attribution (a) == (b) on every flow).
Counts stay small: Python in the TCG guest is ~15x slower."""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.lab

REPLAYS = Path(__file__).resolve().parents[2] / "replays"
CLI = [sys.executable, "-c", "from lvsprobe.cli import main; main()"]


def _topology(**kw: Any) -> Any:
    from lvsprobe.lab.topology import Topology

    return Topology(**kw)


def _replay(
    lab: Any, name: str, *extra: str, check: bool = True, out: Path | None = None
) -> tuple[dict[str, Any], Any]:
    """Run replays/NAME.yaml in the client namespace into `out` (default: a new directory
    in the shared dir); (summary, flows as a pandas frame)."""
    out = out or Path(lab.shared_dir) / f"{name}-{time.monotonic_ns()}"
    argv = [
        *CLI,
        "replay",
        "run",
        str(REPLAYS / f"{name}.yaml"),
        "--out",
        str(out),
        "--conn-table",
        "netns:lvs1",
        "--json",
        "--no-progress",
        *extra,
    ]
    if check:
        argv.append("--check")
    result = lab.run("client", argv, timeout=800)
    assert result.returncode == 0, f"{name}: rc {result.returncode}\n{result.stderr[-3000:]}"
    summary = json.loads(result.stdout)
    flows = pq.read_table(io.BytesIO((out / "flows.parquet").read_bytes())).to_pandas()
    assert len(flows) == summary["flows"]
    return summary, flows


def _agree(flows: Any) -> None:
    judged = flows[flows["kind"] != "syn"]
    assert judged["attribution_agrees"].eq(True).all(), judged[
        ["flow_id", "backend", "conn_backend", "conn_backend_address"]
    ].head()


def test_rr_fairness_exact_thirds(lab: Any) -> None:
    lab.ensure(_topology())
    summary, flows = _replay(lab, "rr-fairness")
    assert summary["backends"] == {"rs1": 33, "rs2": 33, "rs3": 33}
    _agree(flows)


def test_wrr_weights_exact(lab: Any) -> None:
    lab.ensure(_topology(scheduler="wrr", weights=(1, 2, 3)))
    summary, flows = _replay(lab, "wrr-weights")
    assert summary["backends"] == {"rs1": 10, "rs2": 20, "rs3": 30}
    _agree(flows)


def test_lc_fills_backends_with_long_connections(lab: Any) -> None:
    lab.ensure(_topology(scheduler="lc"))
    summary, flows = _replay(lab, "lc-long-connections")
    assert summary["backends"] == {"rs1": 3, "rs2": 3, "rs3": 3}
    assert flows["heartbeats"].min() >= 10
    _agree(flows)


def test_sh_256_clients_each_always_on_one_backend(lab: Any) -> None:
    lab.ensure(_topology(scheduler="sh"))
    summary, flows = _replay(lab, "sh-many-clients")
    assert summary["flows"] == 512 and summary["ok"] == 512
    per_client = flows.groupby("client_address")["backend"].nunique()
    assert len(per_client) == 256 and per_client.max() == 1
    assert set(flows["backend"]) == {"rs1", "rs2", "rs3"}
    _agree(flows)


@pytest.mark.parametrize("kind", ["ftp-passive", "ftp-active"])
def test_ftp_through_nat_with_ip_vs_ftp(lab: Any, kind: str) -> None:
    lab.ensure(_topology())
    _, flows = _replay(lab, kind)
    assert flows["ftp_checksum_ok"].all() and (flows["ftp_file_size"] == 262144).all()
    assert flows["ftp_data_client_port"].notna().all()
    _agree(flows)


@pytest.mark.parametrize("kind", ["ftp-passive", "ftp-active"])
def test_ftp_through_dr_with_persistence(lab: Any, kind: str) -> None:
    from lvsprobe.lab.topology import Mode

    lab.ensure(_topology(mode=Mode.DR))
    _, flows = _replay(lab, kind)
    assert flows["ftp_checksum_ok"].all()
    _agree(flows)


def test_tls_resumption_sticks_under_persistence(lab: Any) -> None:
    from lvsprobe.lab.topology import ServiceSpec

    services = (ServiceSpec("tcp", 80), ServiceSpec("tcp", 443, persistence_s=300))
    lab.ensure(_topology(services=services))
    _, flows = _replay(lab, "tls-persistence")
    later = flows.sort_values("flow_id").groupby("client_address").nth(slice(1, None))
    assert later["tls_session_reused"].all()
    assert flows.groupby("client_address")["backend"].nunique().max() == 1
    _agree(flows)


def test_tls_without_persistence_spreads_and_rarely_resumes(lab: Any) -> None:
    from lvsprobe.lab.topology import ServiceSpec

    lab.ensure(_topology(services=(ServiceSpec("tcp", 80), ServiceSpec("tcp", 443))))
    _, flows = _replay(lab, "tls-persistence", check=False)
    assert (flows["outcome"] == "ok").all()
    assert set(flows["backend"]) == {"rs1", "rs2", "rs3"}
    later = flows.sort_values("flow_id").groupby("client_address").nth(slice(1, None))
    # rr moves each client's next connection to another backend, whose cache lacks the session
    assert later["tls_session_reused"].mean() < 0.5
    _agree(flows)


def _established_to_port(lab: Any, port: int) -> int:
    table = lab.run("lvs1", ["cat", "/proc/net/ip_vs_conn"]).stdout.splitlines()[1:]
    return sum(1 for line in table if f" {port:04X} " in line and "ESTABLISHED" in line)


def test_long_lived_connections_across_a_failover(lab: Any) -> None:
    lab.ensure(_topology())
    out = Path(lab.shared_dir) / "failover"
    process = lab.spawn(
        "client",
        [
            *CLI,
            "replay",
            "run",
            str(REPLAYS / "long-lived-failover.yaml"),
            "--out",
            str(out),
            "--conn-table",
            "netns:lvs1",
            "--json",
            "--no-progress",
        ],
    )
    try:
        deadline = time.monotonic() + 240  # python start-up in the guest, then 3 s of arrivals
        while _established_to_port(lab, 7) < 12 and time.monotonic() < deadline:
            time.sleep(2)
        time.sleep(3)
        lab.failover()
        result = _wait(process, 400)
    finally:
        lab.mark_dirty()
    assert result.returncode == 0, result.stderr[-2000:]
    flows = pq.read_table(io.BytesIO((out / "flows.parquet").read_bytes())).to_pandas()
    assert len(flows) == 12
    assert (flows["heartbeats"] > 0).all()
    assert set(flows["outcome"]) <= {"ok", "reset", "timeout"}
    _agree(flows)


def _wait(process: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = process.poll()
        if result is not None:
            return result
        time.sleep(1)
    return process.stop()


def _syn_recv_entries(run_dir: Path, vip: str, port: int) -> list[tuple[float, set[Any]]]:
    """Per conn-table snapshot of the run: its time and the (client, port) of every SYN_RECV
    entry for VIP:PORT."""
    from lvsprobe.kernel.procfs.ip_vs_conn import iter_ip_vs_conn
    from lvsprobe.replay.attribution import load_snapshots

    out = []
    for snap in load_snapshots(run_dir / "conn-snapshots"):
        entries = {
            (str(c.client_address), c.client_port)
            for c in iter_ip_vs_conn(snap.data)
            if c.state == "SYN_RECV" and str(c.virtual_address) == vip and c.virtual_port == port
        }
        out.append((snap.t_s, entries))
    return out


def test_conn_table_fill_leaves_one_syn_recv_entry_per_syn(lab: Any) -> None:
    # A service whose real server never answers (no host at .250): the director forwards
    # each SYN and no SYN-ACK (so no RST from the client's kernel) ever comes back, so every
    # SYN's entry stays SYN_RECV for its 60 s timeout.
    lab.ensure(_topology())
    vip, port = lab.vip, 9999
    lab.sh(
        "lvs1",
        f"ipvsadm -A -t {vip}:{port} -s rr && ipvsadm -a -t {vip}:{port} -r 198.18.1.250:80 -m",
    ).check()
    run_dir = Path(lab.shared_dir) / "conn-table-fill"
    try:
        summary, flows = _replay(
            lab, "conn-table-fill", "--target", f"{vip}:{port}", "--snapshot-every", "2",
            out=run_dir,
        )  # fmt: skip
    finally:
        lab.mark_dirty()
    assert summary["flows"] == summary["ok"] == 5000 and summary["complete"]
    sent = set(zip(flows["client_address"], flows["client_port"], strict=True))
    assert len(sent) == 5000  # distinct source ports: one entry per SYN
    assert summary["conn_table_matched"] == 5000
    snapshots = _syn_recv_entries(run_dir, vip, port)
    seen = set().union(*(entries for _, entries in snapshots))
    assert seen == sent  # every SYN left a SYN_RECV entry, and nothing else did
    # and each entry was there in SYN_RECV when a snapshot after its SYN looked (snapshot
    # times are taken when a read ends, so "first after" is not exact: any later one)
    for row in flows.itertuples():
        key = (row.client_address, row.client_port)
        assert any(key in entries for t, entries in snapshots if t >= row.end_s), key
    print("conn-table-fill: peak SYN_RECV entries", max(len(e) for _, e in snapshots))


def test_recorded_example_replays_with_its_outcomes_and_backends(lab: Any) -> None:
    import yaml

    lab.ensure(_topology())
    summary, flows = _replay(lab, "recorded-example")  # --check: all ok, (a) == (b)
    recorded = yaml.safe_load((REPLAYS / "recorded-example.yaml").read_text())["recorded"]
    assert summary["flows"] == summary["ok"] == len(recorded) == 32
    flows = flows.sort_values("flow_id").reset_index(drop=True)
    # each recorded flow ran as recorded: kind, port, offset, and the client mapped in order
    for row, rec in zip(flows.itertuples(), recorded, strict=True):
        assert row.kind == rec["kind"]
        assert row.server_port == rec.get("port", 80)
        assert abs(row.scheduled_s - float(rec["at"].removesuffix("ms")) / 1000) < 1e-6
    assert flows.groupby("client_address").ngroups == 12
    ftp = flows[flows["kind"] == "ftp-passive"]
    assert ftp["ftp_checksum_ok"].all() and (ftp["ftp_file_size"] == 262144).all()
    assert (flows[flows["kind"] == "http"]["requests"] >= 1).all()
    keepalive = [i for i, r in enumerate(recorded) if r.get("keepalive")]
    assert (flows.loc[keepalive, "requests"] == 3).all()
    # rr per service: any run of new connections spreads over the 3 servers within one
    for _, service in flows.groupby(["protocol", "server_port"]):
        counts = service["backend"].value_counts()
        spread = [counts.get(name, 0) for name in ("rs1", "rs2", "rs3")]
        assert max(spread) - min(spread) <= 1, service[["flow_id", "backend"]]
    _agree(flows)
