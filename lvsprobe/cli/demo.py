"""`lvsprobe demo`: the whole tool once, against a real director in a throw-away VM.

Boots the lab (NAT, rr, three real servers, sync daemon), replays HTTP clients from many
source addresses, shows the director as ipvsadm would, scrapes the exporter, checks the
scheduler's fairness and writes an HTML report. Every step is bounded and stops by itself.
"""

from __future__ import annotations

import shlex
import sys
import time
import urllib.request
from pathlib import Path

import click

from lvsprobe.cli.exit import ExitCode
from lvsprobe.errors import LabError

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
        director_json = lab.run("lvs1", [*CLI, "status", "--json"], timeout=300).check().stdout
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "director.json").write_text(director_json)

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
