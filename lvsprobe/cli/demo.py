"""`lvsprobe demo`: the whole tool once, against a real director in a throw-away VM.

Boots the lab (NAT, rr, three real servers, sync daemon), replays HTTP clients from many
source addresses, shows the director as ipvsadm would, scrapes the exporter, checks the
scheduler's fairness and writes an HTML report. Every step is bounded and stops by itself.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import click

from lvsprobe.cli.exit import ExitCode
from lvsprobe.errors import LabError

if TYPE_CHECKING:
    from lvsprobe.lab import Lab

REPLAYS = Path(__file__).resolve().parents[2] / "replays"
CLI = [sys.executable, "-m", "lvsprobe"]
EXPORT_PORT = 9954


def _step(text: str) -> None:
    click.secho(f"\n==> {text}", bold=True)


def _show(title: str, text: str) -> None:
    click.echo(f"--- {title}")
    click.echo(text.rstrip("\n"))


def _scrape(host: str, port: int, attempts: int = 60) -> str:
    """Fetch /metrics through the lab's loopback forward (the exporter may still start)."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=30) as resp:
                return str(resp.read().decode())
        except OSError as exc:
            last = exc
            time.sleep(1)
    raise LabError(f"the exporter in the lab did not answer: {last}")


def director_text(status_json: str) -> str:
    """`lvsprobe status --json` output as `lvsprobe status` prints it (ipvsadm -Ln, the
    connection table), then its warnings (--json prints none)."""
    from lvsprobe.cli.status import render_text, warning_lines
    from lvsprobe.ipvsadm_view import View
    from lvsprobe.snapshot_json import snapshot_from_json

    try:
        doc = json.loads(status_json)
    except json.JSONDecodeError as exc:
        raise LabError(f"lvsprobe status --json printed no JSON: {exc}") from exc
    snap = snapshot_from_json(doc)
    lines = warning_lines(snap, View.LIST, ("conns",))
    return render_text(snap, View.LIST, exact=False, extra=("conns",)) + "".join(
        f"{line}\n" for line in lines
    )


def show_director_before(lab: Lab, run_dir: Path) -> None:
    """Save the director's snapshot for the analyzers, and show it.

    The JSON is for `analyze fairness --snapshot`; people read the ipvsadm view of it (the
    step used to save the JSON and print nothing).
    """
    result = lab.run("lvs1", [*CLI, "status", "--json"], timeout=300).check()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "director.json").write_text(result.stdout)
    _show("lvsprobe status", director_text(result.stdout))


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out/demo"),
    show_default=True,
    help="Where the run, its analysis and the report go.",
)
@click.option(
    "--scenario",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=REPLAYS / "rr-fairness.yaml",
    show_default=True,
    help="Replay scenario to drive through the director.",
)
def demo(out: Path, scenario: Path) -> None:
    """Boot the lab, replay clients through a real director, show and check what happened.

    Needs the lab's prerequisites (`lvsprobe lab prepare`, run by `make demo`). Takes a few
    minutes under software emulation (TCG); all traffic stays inside the VM, which has no
    network device.
    """
    from lvsprobe.lab import Lab, Topology

    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    run_dir = out / f"run-{time.strftime('%Y%m%d-%H%M%S')}"

    _step("Booting the lab: Debian's kernel in a VM, an LVS/NAT cluster in namespaces")
    lab_progress = lambda message: click.echo(f"lab: {message}")  # noqa: E731
    with Lab(Topology(sync=True), shared_dir=out, progress=lab_progress) as lab:
        click.echo(f"{lab.topology.describe()} — booted in {lab.boot_s:.1f} s ({lab.accel})")

        _step("Director before traffic (lvsprobe status in namespace lvs1)")
        show_director_before(lab, run_dir)

        _step(f"Replaying {scenario.name} from the client namespace")
        replay = [
            *CLI,
            *("replay", "run", str(scenario), "--out", str(run_dir)),
            *("--conn-table", "netns:lvs1", "--no-progress", "--check"),
        ]
        click.echo("$ " + shlex.join(replay[2:]))
        result = lab.run("client", replay, timeout=900)
        _show("replay", result.stdout + result.stderr)
        if result.returncode not in (ExitCode.OK, ExitCode.CHECK_FAILED):
            raise LabError(f"the replay failed (exit {result.returncode})")

        _step("The director after traffic, as ipvsadm shows it")
        status = lab.run("lvs1", [*CLI, "status", "--stats", "--timeout", "--daemon"], timeout=300)
        _show("lvsprobe status --stats --timeout --daemon", status.check().stdout)
        _show("ipvsadm -Ln --stats (the kernel's own tool)", lab.ipvsadm("-Ln", "--stats"))

        _step("Prometheus exporter in lvs1 (a few series)")
        exporter = lab.spawn(
            "lvs1", [*CLI, "export", "--web.listen-address", f"127.0.0.1:{EXPORT_PORT}"]
        )
        try:
            host, port = lab.forward("lvs1", EXPORT_PORT)
            metrics = _scrape(host, port)
        finally:
            exporter.stop()
        wanted = ("ipvs_up", "ipvs_service_connections_total", "ipvs_backend_connections_total")
        _show(
            "/metrics",
            "\n".join(line for line in metrics.splitlines() if line.startswith(wanted)),
        )

    _step("Checking the scheduler against the kernel's algorithm, writing the report")
    from lvsprobe.cli import cli

    snapshot = run_dir / "director.json"
    code = 0
    for args in (
        ["analyze", "fairness", str(run_dir), "--snapshot", str(snapshot)],
        ["report", str(run_dir)],
    ):
        click.echo("$ lvsprobe " + shlex.join(args))
        try:
            cli.main(args=args, prog_name="lvsprobe", standalone_mode=False)
        except click.exceptions.Exit as exc:
            code = max(code, int(exc.exit_code))
    click.echo(f"\nRun directory: {run_dir}\nReport: {run_dir / 'report.html'}")
    if code:
        raise click.exceptions.Exit(code)
