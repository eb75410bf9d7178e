"""`lvsprobe export`: the Prometheus exporter sidecar."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from lvsprobe.cli.keepalived_options import keepalived_options
from lvsprobe.cli.logfmt import LOG_LEVELS, setup_logging
from lvsprobe.cli.options import Duration, max_conn_table_bytes_option
from lvsprobe.deadline import DEFAULT_READ_TIMEOUT_S

if TYPE_CHECKING:
    from lvsprobe.exporter.httpsettings import HTTPLimits
    from lvsprobe.exporter.names import NamesFile

DEFAULT_PORT = 9954


def _matches(param: str, values: tuple[str, ...]) -> tuple[Any, ...]:
    from lvsprobe.exporter.filters import parse_service_match

    out = []
    for value in values:
        try:
            out.append(parse_service_match(value))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=param) from None
    return tuple(out)


@click.command(context_settings={"show_default": True})
@click.option(
    "--web.listen-address",
    "listen",
    default=f":{DEFAULT_PORT}",
    metavar="[HOST]:PORT",
    help="Where to serve /metrics. ':PORT' listens on every interface (IPv6 and IPv4).",
)
@click.option(
    "--web.config.file",
    "web_config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="exporter-toolkit web config: TLS (cert, key, client CA) and basic_auth_users "
    "with bcrypt hashes.",
)
@click.option(
    "--web.telemetry-path",
    "telemetry_path",
    default="/metrics",
    metavar="PATH",
    help="Path of the metrics.",
)
@click.option(
    "--web.max-requests",
    "max_requests",
    default=40,
    type=click.IntRange(1),
    help="Scrapes reading the kernel at once; more wait their turn. Requests that arrive "
    "while a read of the same format runs share its answer.",
)
@click.option(
    "--web.read-timeout",
    "web_read_timeout_s",
    default="10s",
    type=Duration(),
    help="Time a client has to send a whole request head (TLS handshake included).",
)
@click.option(
    "--web.write-timeout",
    "web_write_timeout_s",
    default="30s",
    type=Duration(),
    help="Time a client has to receive a whole answer, from its first byte.",
)
@click.option(
    "--web.idle-timeout",
    "web_idle_timeout_s",
    default="90s",
    type=Duration(),
    help="Time a keep-alive connection may wait for its next request.",
)
@click.option(
    "--web.max-connections",
    "max_connections",
    default=512,
    type=click.IntRange(1),
    help="Open connections at most; beyond, the one waiting longest for a request is "
    "closed (or the new one, when every connection is being answered).",
)
@click.option(
    "--log.level",
    "log_level",
    type=click.Choice(list(LOG_LEVELS)),
    default="info",
    help="Only log messages of this level or above.",
)
@click.option(
    "--procfs-root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    metavar="DIR",
    help="Read a tree laid out like /proc (a host /proc mounted in a "
    "container, or a captured tree) instead of the kernel; netlink is not used then.",
)
@click.option(
    "--sysfs-root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    metavar="DIR",
    help="With --procfs-root: where /sys is (ip_vs_conn slab sizes).",
)
@click.option(
    "--netns",
    "netns",
    multiple=True,
    metavar="NAME",
    help="Read this named network namespace (/run/netns/NAME); repeat for several. "
    "With more than one, every series carries a netns label.",
)
@click.option(
    "--pid",
    "pids",
    multiple=True,
    type=click.IntRange(1),
    metavar="PID",
    help="Read the network namespace of this process (a container's, a director pod's); "
    "repeatable, and combines with --netns (with several read, its series carry "
    'netns="PID").',
)
@click.option(
    "--collector.netlink/--no-collector.netlink",
    "netlink",
    default=True,
    help="Ask generic netlink (per-service and per-backend counters and rates, "
    "daemons, timeouts; needs CAP_NET_ADMIN in the initial user namespace). "
    "Without it, or when refused: /proc only.",
)
@click.option(
    "--collector.conns",
    "conns",
    type=click.Choice(["off", "summary", "per-real-server"]),
    default="summary",
    help="Connection-table series: none, per service and state, "
    "or also per real server. Reading a big table costs time: turn it off if needed.",
)
@click.option(
    "--collector.services.include",
    "include",
    multiple=True,
    metavar="PATTERN",
    help="Export only services matching one of these: ADDRESS, CIDR, :PORT, "
    "ADDRESS:PORT, CIDR:PORT, [IPv6/LEN]:PORT or fwmark:N. Repeatable.",
)
@click.option(
    "--collector.services.exclude",
    "exclude",
    multiple=True,
    metavar="PATTERN",
    help="Leave out services matching one of these (same patterns). Repeatable.",
)
@click.option(
    "--collector.backends.max-series",
    "max_backends",
    type=click.IntRange(0),
    default=None,
    help="Export at most this many real servers per scrape; the rest "
    "is counted in ipvs_exporter_dropped_series_total.  [default: no cap]",
)
@click.option(
    "--collector.backends.rates",
    "backend_rates",
    is_flag=True,
    help="Also export the kernel's rate estimates per real server "
    "(ipvs_backend_*_per_second, 5 more series each). Off: use rate() on the *_total "
    "counters; services keep theirs.",
)
@click.option(
    "--collector.backends.extra",
    "backend_extra",
    is_flag=True,
    help="Also export per real server what no dashboard or alert rule reads: the packet "
    "counters (ipvs_backend_{incoming,outgoing}_packets_total) and the lower connection "
    "threshold, 3 more series each.",
)
@click.option(
    "--names",
    "names_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML mapping 'ADDRESS:PORT/PROTOCOL' or 'fwmark:N' to a service name "
    "(exported as ipvs_service_name_info).",
)
@click.option(
    "--compat",
    type=click.Choice(["node-exporter"]),
    help="Also serve node_exporter's node_ipvs_* series, exactly as its ipvs collector.",
)
@click.option(
    "--collector.ipvs.backend-labels",
    "backend_labels",
    default="local_address,local_port,remote_address,remote_port,proto,local_mark",
    help="With --compat node-exporter: the node_ipvs_backend_* labels to keep "
    "(backends then alike are summed), as node_exporter's flag.",
)
@click.option(
    "--hz",
    type=click.IntRange(1),
    help="The kernel's CONFIG_HZ, to convert "
    "/proc persistence timeouts from jiffies.  [default: 250]",
)
@click.option(
    "--scrape.read-timeout",
    "read_timeout_s",
    type=click.FloatRange(min=0),
    default=DEFAULT_READ_TIMEOUT_S,
    metavar="SECONDS",
    help="Stop reading the kernel this long into a scrape: the sources not read by then "
    "report ipvs_scrape_source_success 0. Keep it under Prometheus' scrape_timeout; "
    "0 reads to the end.",
)
@max_conn_table_bytes_option
@keepalived_options
@click.option("--once", is_flag=True, help="Print one scrape on stdout and exit.")
def export(
    listen: str,
    web_config: Path | None,
    telemetry_path: str,
    max_requests: int,
    web_read_timeout_s: float,
    web_write_timeout_s: float,
    web_idle_timeout_s: float,
    max_connections: int,
    log_level: str,
    procfs_root: Path | None,
    sysfs_root: Path | None,
    netns: tuple[str, ...],
    pids: tuple[int, ...],
    netlink: bool,
    conns: str,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    max_backends: int | None,
    backend_rates: bool,
    backend_extra: bool,
    names_file: Path | None,
    compat: str | None,
    backend_labels: str,
    hz: int | None,
    read_timeout_s: float,
    max_conn_table_bytes: int,
    once: bool,
    keepalived: Any,
) -> None:
    """Serve Prometheus metrics of IPVS, read at scrape time.

    \b
    Every scrape reads each namespace once (netlink, else /proc): services and real servers
    with their counters (8 series per real server by default, 16 with both
    --collector.backends.rates and --collector.backends.extra),
    the connection table by state, sync daemons, timeouts, sysctls. A source that fails
    costs only its own series: ipvs_scrape_source_success{source} turns 0 and one log line
    says why. IPVS not loaded is `ipvs_up 0`, not an error.

    \b
    HTTP: /metrics (OpenMetrics when Prometheus asks for it), /healthz and /-/healthy
    (liveness), /-/ready (200 once a first read has completed). Basic auth guards /metrics
    and the landing page, not the health endpoints (a kubelet probe sends no credentials).

    \b
    Examples:
      lvsprobe export                                  # :9954, this namespace
      lvsprobe export --netns blue --netns green       # two namespaces, netns label
      lvsprobe export --pid "$(pidof keepalived)"      # the namespace of a process
      lvsprobe export --compat node-exporter           # plus node_ipvs_* for old dashboards
      lvsprobe export --collector.keepalived           # plus keepalived's VRRP and checkers
      lvsprobe export --procfs-root tests/fixtures/kernel-6.1/nat/proc --once
    """
    from lvsprobe.exporter.compat import parse_backend_labels
    from lvsprobe.exporter.filters import ServiceFilter
    from lvsprobe.exporter.flights import scrape_formats
    from lvsprobe.exporter.httpsettings import HTTPLimits, check_telemetry_path
    from lvsprobe.exporter.scrape import ExportOptions, Scraper
    from lvsprobe.sources import Target

    setup_logging(log_level)
    try:
        check_telemetry_path(telemetry_path)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--web.telemetry-path") from None
    if procfs_root is not None and (netns or pids):
        other = "--netns" if netns else "--pid"
        raise click.UsageError(f"--procfs-root and {other} exclude each other: choose one")
    for pid in pids:
        if not Path(f"/proc/{pid}/ns/net").exists():
            raise click.BadParameter(
                f"no process {pid} (/proc/{pid} does not exist)", param_hint="--pid"
            )
    if sysfs_root is not None and procfs_root is None:
        raise click.BadParameter("only makes sense with --procfs-root", param_hint="--sysfs-root")
    try:
        labels = parse_backend_labels(backend_labels)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--collector.ipvs.backend-labels") from None
    if procfs_root is not None:
        targets: tuple[Target | None, ...] = (
            Target(procfs_root=procfs_root, sysfs_root=sysfs_root),
        )
    elif netns or pids:
        targets = tuple(Target(netns=name) for name in dict.fromkeys(netns))
        targets += tuple(Target(pid=pid) for pid in dict.fromkeys(pids))
    else:
        targets = (None,)
    options = ExportOptions(
        targets=targets,
        conns=conns,  # type: ignore[arg-type]
        netlink=netlink,
        hz=hz,
        service_filter=ServiceFilter(
            _matches("--collector.services.include", include),
            _matches("--collector.services.exclude", exclude),
        ),
        max_backends=max_backends,
        backend_rates=backend_rates,
        backend_extra=backend_extra,
        names=_names(names_file) if names_file is not None else None,
        compat_node_exporter=compat == "node-exporter",
        compat_backend_labels=labels,
        read_timeout_s=read_timeout_s or None,
        max_conn_table_bytes=max_conn_table_bytes,
        keepalived=keepalived,
    )
    scraper = Scraper(options)
    if once:
        for chunk in scraper.stream():
            sys.stdout.buffer.write(chunk)
        return
    limits = HTTPLimits(
        read_timeout_s=web_read_timeout_s,
        write_timeout_s=web_write_timeout_s,
        idle_timeout_s=web_idle_timeout_s,
        max_connections=max_connections,
        max_scrapes=max_requests,
    )
    _serve(listen, web_config, telemetry_path, limits, scrape_formats(scraper))


def _names(path: Path) -> NamesFile:
    """The --names file; its reader (YAML) loads only when one is given."""
    from lvsprobe.exporter.names import NamesFile

    return NamesFile(path)


def _serve(
    listen: str, web_config: Path | None, path: str, limits: HTTPLimits, scrape: Any
) -> None:
    from lvsprobe.exporter.heap import one_arena
    from lvsprobe.exporter.httpsettings import parse_listen_address
    from lvsprobe.exporter.server import ExporterServer

    one_arena()  # before the scrape pool's threads start (heap.py says why)
    try:
        host, port = parse_listen_address(listen)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--web.listen-address") from None
    web = None
    if web_config is not None:
        # TLS (ssl), bcrypt and YAML load only for a web config that asks for them.
        from lvsprobe.exporter.webconfig import read_web_config

        web = read_web_config(web_config)
    log = logging.getLogger("lvsprobe.exporter")
    try:
        server = _bind(host, port, scrape, web, path, limits, ExporterServer)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {listen}: {exc.strerror}") from None
    bound = server.server_address
    log.info(
        "listening: address=%s:%s tls=%s path=%s",
        bound[0],
        bound[1],
        web is not None and web.tls is not None,
        path,
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()


def _bind(
    host: str, port: int, scrape: Any, web: Any, path: str, limits: HTTPLimits, cls: Any
) -> Any:
    if host:
        return cls((host, port), scrape, web, path, limits)
    try:
        return cls(("::", port), scrape, web, path, limits)
    except OSError:
        return cls(("0.0.0.0", port), scrape, web, path, limits)
