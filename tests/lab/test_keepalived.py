"""Real keepalived in the lab: VRRP moves the VIPs when lvs1's keepalived hangs (SIGSTOP,
the classic dead-heartbeat failover), its checker takes a killed real server out. One
keepalived cluster shared by the tests (rebuilt once, for sync off); short advert_int and
delay_loop keep each drill to a minute or two under TCG.

Timings are compared with keepalived's predictions with a wide tolerance (TCG, a shared
host) and printed; no assertion rests on the wall clock except as a safety bound.

During the sync-on failover and the checker drill `lvsprobe export --collector.keepalived`
runs in lvs1 and lvs2 and the host scrapes both back to back: a transition keepalived reports
(its notify log) must show in that director's series within two scrapes started after it.

The sync-on test also fails over a second time, by a clean stop of lvs1's keepalived, and
Debian's Prometheus on the host scrapes both exporters throughout: there the dashboards'
keepalived queries are proven (tests/dashboards/test_lab_proof.py proves the others), each
with the values the drills imply.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from lvsprobe.cli import cli
from lvsprobe.dashboards import proof
from lvsprobe.dashboards.prometheus import DEFAULT_BINARY, Prometheus, PrometheusError
from lvsprobe.lab.drillrun import LONG_LIVED, drill_topology, failover_drill, health_drill
from lvsprobe.lab.faults import FaultKind
from lvsprobe.lab.healthdrill import HealthPlan
from lvsprobe.lab.kastate import notify_events
from lvsprobe.lab.keepalived import director_dir
from lvsprobe.lab.listening import forward_when_listening

pytestmark = pytest.mark.lab

TOLERANCE = "1.5"  # s: TCG on a loaded host delays keepalived and the notify reader
KEEPALIVED = drill_topology()
DIRECTORS = ("lvs1", "lvs2")
EXPORTER_PORT = 9956
CLI = [sys.executable, "-c", "from lvsprobe.cli import main; main()"]
MAX_SCRAPES = 400  # per director: a safety bound on the watch loop
# Between scrapes: back-to-back scrapes (a JSON dump each) loaded the TCG guest enough to
# delay the drills' replays by a minute; 2 s still puts a few scrapes in a takeover.
SCRAPE_PAUSE_S = 2.0
# A keepalived dump wait this long means keepalived did not answer until something changed
# (half the exporter's --keepalived.dump-timeout below; running ones answer in well under 1 s)
HELD_UP_S = 2.5
# The dashboards' Prometheus: a scrape of a director's exporter took well under 5 s in these
# drills (the watch's timelines), the 2-17 s of test_lab_proof.py being a heavier cluster
# under several VMs. 5 s (the timeout too) still samples lvs2's few seconds as MASTER; a
# scrape of the frozen lvs1 times out (its dump waits 5 s), so its series go stale.
PROM_SCRAPE_S = 5


def exporter_argv(ns: str) -> list[str]:
    home = director_dir(ns)
    return [
        *CLI,
        "export",
        "--web.listen-address",
        f"127.0.0.1:{EXPORTER_PORT}",
        "--log.level",
        "warn",
        "--collector.keepalived",
        "--keepalived.pid-file",
        f"{home}/keepalived.pid",
        "--keepalived.dump-dir",
        f"{home}/tmp",
        "--keepalived.min-interval",
        "0.5",
        "--keepalived.dump-timeout",
        "5",
    ]


@dataclass(frozen=True)
class Scrape:
    """One scrape of a director's exporter: host Unix time it started, keepalived's series."""

    ns: str
    started_unix: float
    keepalived_ok: bool
    vrrp_states: tuple[tuple[str, str], ...]  # (instance, state) of the states set to 1
    backends_down: tuple[str, ...]  # addresses keepalived's checkers call down
    error: str = ""
    keepalived_s: float = 0.0  # how long the collector waited for keepalived's dumps

    def held_up(self) -> bool:
        """keepalived did not answer: its source failed, or its dumps came only after a wait
        no running keepalived needs (a frozen one answers when it is thawed)."""
        return not self.keepalived_ok or self.keepalived_s >= HELD_UP_S

    def state(self, instance: str) -> str | None:
        return dict(self.vrrp_states).get(instance)


def parse_scrape(ns: str, started_unix: float, text: str) -> Scrape:
    ok = False
    waited_s = 0.0
    states: list[tuple[str, str]] = []
    down: list[str] = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "ipvs_scrape_source_success"
                and "keepalived" in sample.labels.values()
            ):
                ok = sample.value == 1
            elif (
                sample.name == "ipvs_scrape_source_duration_seconds"
                and "keepalived" in sample.labels.values()
            ):
                waited_s = sample.value
            elif sample.name == "ipvs_keepalived_vrrp_state" and sample.value == 1:
                labels = list(sample.labels.values())
                states.append((labels[0], labels[-1]))
            elif sample.name == "ipvs_keepalived_backend_up" and sample.value == 0:
                down.extend(v for v in sample.labels.values() if v.count(".") == 3)
    return Scrape(
        ns, started_unix, ok, tuple(sorted(states)), tuple(sorted(set(down))), "", waited_s
    )


class ExporterWatch:
    """Scrapes each director's exporter back to back in a thread until stopped (bounded)."""

    def __init__(self, targets: dict[str, str]) -> None:
        self.targets = targets
        self.scrapes: list[Scrape] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(ns,)) for ns in targets]

    def _loop(self, ns: str) -> None:
        for _ in range(MAX_SCRAPES):
            if self._stop.is_set():
                return
            started = time.time()
            try:
                with urllib.request.urlopen(f"http://{self.targets[ns]}/metrics", timeout=60) as r:
                    scrape = parse_scrape(ns, started, r.read().decode())
            except OSError as exc:
                scrape = Scrape(ns, started, False, (), (), error=str(exc))
            self.scrapes.append(scrape)
            self._stop.wait(SCRAPE_PAUSE_S)

    def __enter__(self) -> ExporterWatch:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def of(self, ns: str) -> list[Scrape]:
        return sorted((s for s in self.scrapes if s.ns == ns), key=lambda s: s.started_unix)

    def after(self, ns: str, unix: float) -> list[Scrape]:
        return [s for s in self.of(ns) if s.started_unix >= unix]

    def timeline(self, ns: str, t0_unix: float) -> str:
        rows = [
            f"{s.started_unix - t0_unix:+.1f}s "
            + (
                s.error
                or (",".join(st for _, st in s.vrrp_states) if s.keepalived_ok else "ka-fail")
            )
            + (f" waited={s.keepalived_s:.1f}s" if s.keepalived_s >= HELD_UP_S else "")
            + (f" down={','.join(s.backends_down)}" if s.backends_down else "")
            for s in self.of(ns)
        ]
        return f"{ns}: " + " | ".join(rows)


def guest_clock_offset_s(lab: Any) -> float:
    """Guest Unix time minus host Unix time (error: half the round trip of one exec)."""
    before = time.time()
    guest = float(lab.sh(None, "date +%s.%N").check().stdout)
    return guest - (before + time.time()) / 2


@contextmanager
def exporters(lab: Any) -> Iterator[ExporterWatch]:
    """`lvsprobe export --collector.keepalived` in lvs1 and lvs2, watched from the host."""
    procs = {ns: lab.spawn(ns, exporter_argv(ns)) for ns in DIRECTORS}
    try:
        targets = {
            ns: forward_when_listening(lab, ns, EXPORTER_PORT, proc, bound_s=120)
            for ns, proc in procs.items()
        }
        with ExporterWatch(targets) as watch:
            yield watch
    finally:
        for proc in procs.values():
            proc.stop()


def shown_within_two_scrapes(watch: ExporterWatch, ns: str, unix: float, shows: Any) -> bool:
    return any(shows(s) for s in watch.after(ns, unix)[:2])


def runs_dir(lab: Any) -> Path:
    path = Path(lab.shared_dir) / "keepalived"
    path.mkdir(exist_ok=True)
    return path


def analyze(kind: str, run: Path) -> dict[str, Any]:
    res = CliRunner().invoke(cli, ["analyze", kind, str(run), "--json", "--tolerance", TOLERANCE])
    assert res.exit_code in (0, 3), res.output
    doc: dict[str, Any] = json.loads(res.output)
    return doc


def failover(lab: Any, name: str, base: int, fault: FaultKind = FaultKind.FREEZE) -> dict[str, Any]:
    started = time.monotonic()
    run = runs_dir(lab) / name
    failover_drill(lab, run, fault, base=base)
    doc = analyze("failover", run)["runs"][0]
    vrrp = doc["vrrp"]
    print(
        f"{name}: drill {time.monotonic() - started:.0f} s; takeover {vrrp.get('takeover_s')} s "
        f"({vrrp.get('takeover_evidence')}), predicted {vrrp['predicted_s']} s; broken "
        f"{doc['broken_total']}/{doc['long_lived']} {doc['fates']} lost at {doc['lost_at']}; "
        f"recovery {doc['recovery_s']}; fail-back {vrrp.get('failback_s')} s; "
        f"both MASTER {vrrp['both_master_s']} s; gaps {doc['gaps']}"
    )
    for check in vrrp["checks"]:
        print(f"  {check}")
    assert (run / "analysis" / "failover.html").is_file()
    assert (run / "keepalived" / "lvs2-events.jsonl").is_file()
    return doc


@contextmanager
def prometheus(targets: list[str], workdir: Path) -> Iterator[Prometheus]:
    """Debian's Prometheus on the host scraping `targets`, once each has been scraped twice."""
    if not os.access(DEFAULT_BINARY, os.X_OK):
        pytest.fail("prometheus missing: `make test` installs Debian's prometheus package")
    with Prometheus(targets, workdir, scrape_interval_s=PROM_SCRAPE_S) as prom:
        try:
            prom.wait_until(
                "count_over_time(ipvs_keepalived_up[1m])",
                lambda r: len(r) == len(targets) and all(int(s["value"][1]) >= 2 for s in r),
                attempts=120,
                pause_s=1,
            )
        except PrometheusError as exc:
            pytest.fail(f"{exc}; targets: {prom.target_health()}")
        yield prom


def wait_scraped_after(prom: Prometheus, unix: float, count: int) -> None:
    """Until every target has `count` scrapes started after `unix` (bounded polls)."""
    after = unix + (count - 1) * PROM_SCRAPE_S
    prom.wait_until(
        f"timestamp(ipvs_keepalived_up) > {after:.3f}",
        lambda r: len(r) == len(prom.targets),
        attempts=30 + count * PROM_SCRAPE_S * 2,
        pause_s=1,
    )


def seen(outcome: proof.Outcome, *labels: str) -> dict[tuple[str, ...], set[float]]:
    """Every value a query returned (each step of a range query), by the given labels."""
    out: dict[tuple[str, ...], set[float]] = {}
    for series in outcome.result:
        key = tuple(series["metric"].get(label, "") for label in labels)
        points = series.get("values") or [series["value"]]
        out.setdefault(key, set()).update(float(v) for _, v in points)
    return out


def prove_keepalived_panels(
    lab: Any, prom: Prometheus, lvs1: str, lvs2: str, range_s: int
) -> dict[tuple[str, str, str], proof.Outcome]:
    """Every dashboard query that reads keepalived's series, as Grafana sends it: each must
    return series (the service: the HTTP one, checked by HTTP_GET)."""
    values = proof.grafana_values([lvs1, lvs2], "", range_s=range_s)
    options = proof.service_options(prom, values)
    values["service"] = options[f"tcp {lab.vip}:80"]
    outcomes = proof.prove(
        prom, proof.exporter_dashboards(), values, range_s=range_s, only=proof.needs_keepalived
    )
    for outcome in outcomes:
        print(outcome.describe(), {k: sorted(v) for k, v in seen(outcome, "instance").items()})
    failed = [o.describe() for o in outcomes if not o.ok]
    assert not failed, f"{len(failed)} of {len(outcomes)} keepalived queries:\n" + "\n".join(failed)
    return {(o.query.dashboard, o.query.panel_title, o.query.ref_id): o for o in outcomes}


def check_keepalived_panel_values(
    lab: Any, panels: dict[tuple[str, str, str], proof.Outcome], lvs1: str, lvs2: str
) -> None:
    """What the panels show is what the drills did: lvs1 MASTER (priority 150), lvs2 BACKUP,
    then MASTER twice (priority 100), lvs1 holding the VIPs at the end; every real server up."""
    sync, service = "lvsprobe-ipvs-sync", "lvsprobe-ipvs-service"
    holder = seen(panels[(sync, "VIP holder (VRRP)", "A")], "instance")
    assert 2 in holder[(lvs1,)] and {1, 2} <= holder[(lvs2,)], holder  # 2 MASTER, 1 BACKUP
    priorities = lab.topology.keepalived.priorities
    by_director = seen(panels[(sync, "VRRP priority", "A")], "instance")
    assert by_director == {(lvs1,): {priorities[0]}, (lvs2,): {priorities[1]}}, by_director
    vips = panels[(sync, "VIPs held", "A")]
    held = seen(vips, "instance", "address")
    assert (lvs1, lab.vip) in held, held
    if vips.query.instant:  # now: after the fail-back, only lvs1
        assert {instance for instance, _ in held} == {lvs1}, held
    marks = seen(panels[(sync, "annotation VRRP failovers (keepalived)", "")], "instance")
    assert (lvs2,) in marks and all(v > 0 for v in marks[(lvs2,)]), marks
    backends = set(lab.real_server_addresses)
    for key in (
        (service, "Health checker verdict (keepalived)", "A"),
        (service, "Real servers", "F"),
    ):
        verdicts = seen(panels[key], "instance", "backend_address")
        assert {k for k in verdicts} == {(d, b) for d in (lvs1, lvs2) for b in backends}, verdicts
        assert all(1 in v for v in verdicts.values()), verdicts


@pytest.mark.timeout(1800)  # two drills on a shared TCG VM
def test_vrrp_failover_with_sync_keeps_the_long_lived_connections(lab: Any, tmp_path: Path) -> None:
    lab.ensure(KEEPALIVED.with_(sync=True))
    offset_s = guest_clock_offset_s(lab)
    started_unix = time.time()
    with exporters(lab) as watch:
        lvs1, lvs2 = (watch.targets[ns] for ns in DIRECTORS)
        with prometheus([lvs1, lvs2], tmp_path / "prometheus") as prom:
            try:
                doc = failover(lab, "ka-freeze-sync", base=100)
                stop = failover(lab, "ka-stop-sync", base=160, fault=FaultKind.STOP)
                wait_scraped_after(prom, time.time(), 2)
            finally:
                for ns in DIRECTORS:
                    print(watch.timeline(ns, started_unix))
            durations = prom.query("max_over_time(scrape_duration_seconds[1h])")
            print(
                "prometheus scrape durations:",
                {s["metric"]["instance"]: s["value"][1] for s in durations},
            )
            range_s = int(time.time() - started_unix) + 30
            panels = prove_keepalived_panels(lab, prom, lvs1, lvs2, range_s)
            check_keepalived_panel_values(lab, panels, lvs1, lvs2)
    masters = [
        e for e in notify_events(lab, "lvs2") if e.kind == "instance" and e.state == "MASTER"
    ]
    assert len(masters) >= 2, "lvs2 did not become MASTER in both drills"
    takeover_unix = masters[0].t_s - offset_s
    print(f"lvs2 MASTER at {takeover_unix - started_unix:+.1f}s (clock offset {offset_s:+.2f} s)")
    instance = masters[0].name
    assert shown_within_two_scrapes(
        watch, "lvs2", takeover_unix, lambda s: s.state(instance) == "master"
    ), watch.timeline("lvs2", started_unix)
    assert any(s.state(instance) == "backup" for s in watch.of("lvs2")), "lvs2 was never BACKUP"
    vrrp = doc["vrrp"]
    # lvs1, frozen, can answer no dump: within two scrapes of the fault its keepalived source
    # fails, or its dump comes only after a long wait (a wait that reaches the thaw gets the
    # dump then); counted from the fault (the takeover comes ~3 advert_int later, and a
    # scrape in flight when lvs1 is frozen waits, so counting from the takeover can miss it)
    fault_unix = takeover_unix - float(vrrp["takeover_s"])
    assert shown_within_two_scrapes(
        watch, "lvs1", fault_unix, lambda s: s.held_up() or s.state(instance) != "master"
    ), watch.timeline("lvs1", started_unix)
    # both faults: the synced copies carry the long-lived connections over, both ways
    for run in (doc, stop):
        assert run["long_lived"] == LONG_LIVED
        assert run["vrrp"]["takeover_evidence"] == "keepalived-json"
        assert run["vrrp"]["passed"], run["vrrp"]["detail"]  # takeover as predicted, lvs1 back
        assert run["lost_at"].get("failover", 0) == 0, run["broken"]
        assert run["expectation"]["passed"], run["expectation"]
        assert run["recovery_s"] is not None


def test_vrrp_failover_without_sync_breaks_them(lab: Any) -> None:
    lab.ensure(KEEPALIVED.with_(sync=False))
    doc = failover(lab, "ka-freeze-nosync", base=130)
    assert doc["vrrp"]["takeover_s"] is not None
    assert doc["lost_at"].get("failover", 0) >= 0.9 * LONG_LIVED, doc["lost_at"]
    assert doc["expectation"]["passed"], doc["expectation"]


def test_checker_takes_a_killed_real_server_out(lab: Any) -> None:
    lab.ensure(KEEPALIVED.with_(sync=False))
    offset_s = guest_clock_offset_s(lab)
    started = time.monotonic()
    started_unix = time.time()
    run = runs_dir(lab) / "ka-kill-rs1"
    with exporters(lab) as watch:
        try:
            health_drill(lab, run, HealthPlan(victim="rs1", fault=FaultKind.KILL_BACKEND))
        finally:
            for ns in DIRECTORS:
                print(watch.timeline(ns, started_unix))
    for ns in DIRECTORS:
        downs = [e for e in notify_events(lab, ns) if e.kind == "rs" and e.state == "DOWN"]
        assert downs, f"{ns}: keepalived reported no real server down"
        address = downs[0].name.split("]")[0].lstrip("[")
        down_unix = downs[0].t_s - offset_s
        assert shown_within_two_scrapes(
            watch, ns, down_unix, lambda s, a=address: a in s.backends_down
        ), watch.timeline(ns, started_unix)
    doc = analyze("health", run)
    win = doc["window"]
    print(
        f"health: drill {time.monotonic() - started:.0f} s; removal {doc.get('removal_s')} s, "
        f"predicted {doc['predicted_removal_s']} s; window {win}; back up {doc.get('readd_s')} s"
    )
    for check in doc["checks"]:
        print(f"  {check}")
    checks = {c["check"]: c["passed"] for c in doc["checks"]}
    assert checks["removal"], doc["checks"]
    assert checks["window counts"], doc["checks"]  # the director's table = the flow log
    assert checks["none after removal"] and checks["inhibit or removal"], doc["checks"]
    assert win["to_victim"] >= 1 and win["victim_fates"].get("refused", 0) == win["to_victim"]
    assert checks["return"] is not False or doc.get("readd_s") is not None, doc["checks"]
