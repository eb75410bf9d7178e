"""The `lvsprobe` command. Subcommands load lazily: start-up stays fast (the lab guest runs
Python about 15x slower than the host), and the sidecar never imports pandas or scapy."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from typing import Any

import click

from lvsprobe import __version__
from lvsprobe.cli.exit import ExitCode
from lvsprobe.errors import LvsprobeError

# name -> (module, attribute, one-line help). One module per command.
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "status": ("lvsprobe.cli.status", "status", "Show IPVS services, real servers and stats."),
    "export": ("lvsprobe.cli.export", "export", "Serve Prometheus metrics (sidecar)."),
    "lab": ("lvsprobe.cli.lab", "lab", "Boot a throw-away VM with a real IPVS cluster."),
    "replay": ("lvsprobe.cli.replay", "replay", "Replay client traffic against a director."),
    "analyze": ("lvsprobe.cli.analyze", "analyze", "Check what a replay run shows."),
    "report": ("lvsprobe.cli.report", "report", "Render a run's analyses as HTML."),
    "dashboards": ("lvsprobe.cli.dashboards", "dashboards", "Generate Grafana dashboards."),
    "names": ("lvsprobe.cli.names", "names", "Write the exporter's names file (Kubernetes)."),
    "demo": ("lvsprobe.cli.demo", "demo", "Boot the lab, drive traffic, show what happened."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in SUBCOMMANDS if self._available(name)]

    @staticmethod
    def _available(name: str) -> bool:
        return importlib.util.find_spec(SUBCOMMANDS[name][0]) is not None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SUBCOMMANDS or not self._available(cmd_name):
            return None
        module_name, attr, _ = SUBCOMMANDS[cmd_name]
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SUBCOMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LvsprobeError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            click.echo(f"lvsprobe: {exc}", err=True)
            ctx.exit(ExitCode.ERROR)
        except KeyboardInterrupt:
            click.echo("lvsprobe: interrupted", err=True)
            ctx.exit(ExitCode.INTERRUPTED)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lvsprobe")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Observe, export and test Linux Virtual Server (IPVS) directors.

    \b
    Typical use:
      lvsprobe status                       what the kernel's IPVS holds now
      lvsprobe export                       Prometheus sidecar on :9954
      lvsprobe lab run -- lvsprobe status   the same against a throw-away real director
      lvsprobe replay run SCENARIO ...      drive client traffic and log every flow
      lvsprobe analyze fairness RUN/        check the scheduler did what it must
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(prog_name="lvsprobe", standalone_mode=True))
