"""The HTML report renders its charts in headless Chromium with no console messages."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from lvsprobe.analyze import schedulers
from lvsprobe.analyze.memory import MemorySample
from lvsprobe.cli import cli
from lvsprobe.cli.exit import ExitCode
from lvsprobe.replay import flowlog, flowsummary
from lvsprobe.replay.thresholds import evaluate, parse_threshold

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=10000",
    "--dump-dom",
]


def render(page: Path, profile: Path) -> tuple[str, list[str]]:
    """The DOM after scripts ran, and the page's console lines (Chromium logs them)."""
    browser = shutil.which("chromium")
    assert browser, "chromium is missing: `make test` installs the Debian package"
    proc = subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={profile}", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, console


def full_run(fb: SimpleNamespace) -> Path:
    picks = schedulers.wrr_sequence([4, 3, 2], 32, schedulers.wrr_after_adds([4, 3, 2]))
    # the last 5 flows are long-lived: they are open across the failover at 10 s
    # (heartbeats), one of them reset by it
    recs = [
        fb.flow(
            k,
            fb.names[p],
            0.05 * k,
            end_s=(10.5 if k == 27 else 40.0) if k >= 27 else None,
            client=f"198.18.0.{k % 5 + 1}",
            outcome="reset" if k == 27 else "ok",
            heartbeats=50 if k >= 27 else 0,
        )
        for k, p in enumerate(picks)
    ]
    events = [
        {"t_s": 10.0, "done_s": 11.5, "event": "failover", "to": "lvs2"},
        {"t_s": 30.0, "done_s": 31.0, "event": "failback", "to": "lvs1"},
    ]
    run = fb.run(recs, scheduler="wrr", weights=(4, 3, 2), events=events)
    samples = [
        MemorySample(n, -(-n // 12) * 12, n, 320, 12, 1, 288, 4096) for n in range(0, 5001, 500)
    ]
    (run / "memory-samples.json").write_text(json.dumps([dataclasses.asdict(s) for s in samples]))
    runner = CliRunner()
    assert runner.invoke(cli, ["analyze", "fairness", str(run)]).exit_code == ExitCode.OK
    runner.invoke(cli, ["analyze", "persistence", str(run), "--timeout", "300"])
    runner.invoke(cli, ["analyze", "failover", str(run), "--sync", "unknown"])
    assert runner.invoke(cli, ["analyze", "memory", str(run)]).exit_code == ExitCode.OK
    res = runner.invoke(cli, ["report", str(run)])
    assert res.exit_code == ExitCode.OK, res.output
    return run / "report.html"


def test_report_renders_every_chart_without_console_errors(
    fb: SimpleNamespace, tmp_path: Path
) -> None:
    page = full_run(fb)
    text = page.read_text()
    assert not re.search(r"<script[^>]*\bsrc=", text)  # self-contained: plotly.js inline
    plots = re.findall(r'id="(plot-\d+)"', text)
    assert len(plots) == 6  # load (rate, latency, shares), fairness, failover, memory
    dom, console = render(page, tmp_path / "profile")
    assert console == []
    for plot in plots:
        body = dom.split(f'id="{plot}"', 1)[1][:20000]
        assert "main-svg" in body, f"{plot} did not render"


def test_a_run_report_shows_its_load_over_time(tmp_path: Path) -> None:
    """A replay run with no analyses yet: rate, errors, latency and shares over time, latency
    per backend and the thresholds, every chart drawn."""
    records = []
    for i in range(600):  # 60 s at 10/s; from 20 s to 22 s the service stalls
        rec = flowlog.FlowRecord(i, "http", "127.0.0.2", 1, "127.0.0.1", 80, "tcp",
                                 i / 10, i / 10, 1.7e9)  # fmt: skip
        stalled = 200 <= i < 220
        rec.end_s = rec.start_s + (22.0 - rec.start_s if stalled else 0.004)
        rec.outcome = "timeout" if i % 97 == 0 else "ok"
        rec.backend = f"rs{i % 3 + 1}"
        rec.settle()
        records.append(rec)
    run = tmp_path / "run"
    run.mkdir()
    flowlog.write_flows(run, records)
    threshold = parse_threshold("p99 < 100ms")
    summary = flowsummary.summarize(records, rates={"planned_per_s": 10.0, "achieved_per_s": 10.0})
    summary["thresholds"] = evaluate([threshold], summary, records)
    flowsummary.write_summary(run, summary)
    res = CliRunner().invoke(cli, ["report", str(run)])
    assert res.exit_code == ExitCode.OK, res.output
    text = (run / "report.html").read_text()
    assert "Total latency per backend" in text and "p99 &lt; 100ms" in text
    plots = re.findall(r'id="(plot-\d+)"', text)
    assert len(plots) == 3  # rate and errors, latency, shares
    dom, console = render(run / "report.html", tmp_path / "profile")
    assert console == []
    for plot in plots:
        assert "main-svg" in dom.split(f'id="{plot}"', 1)[1][:20000], f"{plot} did not render"


@pytest.mark.parametrize("script", ["console.error('broken')", "undefinedFunction()"])
def test_the_detector_sees_console_errors(tmp_path: Path, script: str) -> None:
    page = tmp_path / "bad.html"
    page.write_text(f"<html><body><script>{script}</script></body></html>")
    _, console = render(page, tmp_path / "profile")
    assert console
