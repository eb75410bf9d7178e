"""`lvsprobe names`: write and check the exporter's --names file."""

from __future__ import annotations

import ipaddress
import os
import sys
import tempfile
from pathlib import Path

import click

from lvsprobe.errors import LvsprobeError
from lvsprobe.model import IPAddress


@click.group()
def names() -> None:
    """Make the --names file of `lvsprobe export` (ipvs_service_name_info) and check it.

    \b
      kubectl get svc -A -o json | lvsprobe names from-kubernetes -o names.yml
      lvsprobe names check names.yml
    """


def _node_ips(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> tuple[IPAddress, ...]:
    try:
        return tuple(dict.fromkeys(ipaddress.ip_address(v) for v in values))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@names.command("from-kubernetes")
@click.argument(
    "services_json",
    metavar="FILE",
    default="-",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path),
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the names file here (atomically: a running exporter never reads half of it); "
    "default stdout.",
)
@click.option(
    "--node-ip",
    "node_ips",
    multiple=True,
    metavar="IP",
    callback=_node_ips,
    help="A node address kube-proxy binds nodePorts on (repeatable): nodePorts are named "
    "NODE_IP:NODEPORT for each. Without it nodePorts are not named (a Service does not say "
    "which node addresses kube-proxy uses).",
)
def from_kubernetes(
    services_json: Path, output: Path | None, node_ips: tuple[IPAddress, ...]
) -> None:
    """Name kube-proxy's IPVS virtual services after their Kubernetes Services.

    FILE is `kubectl get svc -A -o json` output (default: stdin). Every cluster IP (both
    families of a dual-stack Service), external IP and load-balancer ingress IP of each port
    is named NAMESPACE/NAME:PORT_NAME, and nodePorts on each --node-ip. Headless and
    ExternalName Services have no virtual service and are counted, not named.

    \b
    Examples:
      kubectl get svc -A -o json | lvsprobe names from-kubernetes > names.yml
      lvsprobe names from-kubernetes svc.json --node-ip 10.0.0.5 --node-ip fd00::5 -o names.yml
    """
    from lvsprobe.exporter.kube_names import (
        MAX_INPUT_BYTES,
        load_kubectl_json,
        parse_kubectl_services,
    )
    from lvsprobe.exporter.names import encode_names

    source = "stdin" if str(services_json) == "-" else str(services_json)
    # one byte over the bound tells an over-long input without holding all of it
    doc = load_kubectl_json(_read(services_json, MAX_INPUT_BYTES + 1), source)
    result = parse_kubectl_services(doc, source, node_ips)
    header = f"lvsprobe names from-kubernetes {source}: {len(result.names)} names"
    text = encode_names(result.names, header)
    if output is None:
        sys.stdout.write(text)
    else:
        _write_atomically(output, text)
    for conflict in result.conflicts[:10]:
        click.echo(f"warning: two names for {conflict}: kept the first", err=True)
    if len(result.conflicts) > 10:
        click.echo(f"warning: {len(result.conflicts) - 10} more conflicts", err=True)
    skipped = ", ".join(f"{why}: {n}" for why, n in sorted(result.skipped.items()))
    click.echo(
        f"{len(result.names)} names from {result.services} Services"
        + (f"; not named: {skipped}" if skipped else ""),
        err=True,
    )


def _read(path: Path, limit: int) -> bytes:
    if str(path) == "-":
        return sys.stdin.buffer.read(limit)
    try:
        with path.open("rb") as stream:
            return stream.read(limit)
    except OSError as exc:
        raise LvsprobeError(f"{path}: cannot read: {exc.strerror}") from exc


def _write_atomically(path: Path, text: str) -> None:
    """Write next to `path`, then rename over it: a reader sees the old file or the new one."""
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(
            tmp, 0o644
        )  # mkstemp's 0600 would hide it from an exporter running as another user
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise LvsprobeError(f"{path}: cannot write: {exc.strerror}") from exc


@names.command("check")
@click.argument("names_file", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
def check(names_file: Path) -> None:
    """Check a names file as `lvsprobe export --names` reads it; exit 1 naming the bad entry."""
    from lvsprobe.exporter.names import read_names

    click.echo(f"{names_file}: {len(read_names(names_file).by_key)} names")
