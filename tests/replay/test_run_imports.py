"""What a `lvsprobe replay run` process on the epoll engine loads, start to finish: what that
engine and the run directory need, not the asyncio engine (asyncio, its driver), TLS, the
conn-table parser without --conn-table, or pandas. Each is start-up time paid by every run
and every engine process the native bench starts; an import added at the top of a module
the epoll path loads shows up here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

MARK = "--- modules ---"
NOT_LOADED = (
    "asyncio",
    "lvsprobe.replay.driver",
    "lvsprobe.replay.runner",
    "lvsprobe.replay.tlsflow",
    "lvsprobe.kernel.procfs.ip_vs_conn",
    "lvsprobe.exporter.server",
    "pandas",
)
CODE = f"""
import atexit, sys
from lvsprobe.cli import main
atexit.register(lambda: print({MARK!r}, *sorted(sys.modules), sep="\\n"))
sys.argv[0] = "lvsprobe"
main()
"""


def _modules_of_run(tmp_path: Path, port: int, *flags: str) -> tuple[dict[str, Any], set[str]]:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        f"name: imports\ntarget: {{address: 127.0.0.1, port: {port}}}\n"
        "clients: {cidr: 127.0.0.10/24, count: 4}\nflows: [{kind: http}]\n"
        "arrival: {model: closed, concurrency: 2}\nbounds: {max_flows: 6, max_duration: 20s}\n"
    )
    argv = ["replay", "run", str(scenario), "--out", str(tmp_path / "run"), "--json",
            "--no-progress", "--skip-pool-check", *flags]  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", CODE, *argv], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    summary, _, modules = out.stdout.partition(MARK)
    return json.loads(summary), set(modules.split())


def test_an_epoll_run_loads_neither_asyncio_nor_pandas(tmp_path: Path, servers: Any) -> None:
    summary, modules = _modules_of_run(tmp_path, servers.http, "--engine", "epoll")
    assert summary["ok"] == 6 and summary["complete"] is True
    assert (tmp_path / "run" / "flows.parquet").is_file()
    assert "lvsprobe.replay.fastloop" in modules and "pyarrow.parquet" in modules
    assert sorted(m for m in NOT_LOADED if m in modules) == []


def test_an_asyncio_run_still_loads_its_engine(tmp_path: Path, servers: Any) -> None:
    summary, modules = _modules_of_run(tmp_path, servers.http, "--engine", "asyncio")
    assert summary["ok"] == 6
    assert {"asyncio", "lvsprobe.replay.runner", "lvsprobe.replay.driver"} <= modules
    assert "pandas" not in modules
