"""On this machine, over loopback: new connections/s of the epoll engine against `wrk -H
'Connection: close'` (each request a new connection) on the same nginx, with as many engine
processes as wrk threads and the same total concurrency. A ratio, not a timed test: client,
server and kernel share this host's cores (and other users' load), so only paired figures
mean anything.

Like with like:
- rounds of paired runs, the order alternating (wrk first, then the engine first), each
  ratio taken within its round; min/median/max over the rounds;
- the engine's rate over its steady window (from its flow logs: the span where every engine
  process was running, flows ended in it per second) beside wrk's own figure, and both
  whole-process figures (ok flows over the wall time from launch to exit: the engine's
  start-up, plan and flow-log writing count there, as wrk's start-up does);
- CPU per connection (user + system, from the children's rusage) of the client, and of the
  nginx workers (/proc/PID/stat): a server worker near 100 % busy would make the ratio
  measure the server, so its busy share is printed with each run;
- the engine plans only what it can run: max_flows is sized from wrk's last rate (twice it),
  not a fixed number per second of run, since a closed loop never starts the rest;
- a reference row, the bare CPython loop (bench/bare_loop.py: the ceiling for any Python
  engine, the same syscalls per connection and nothing recorded), run as the engine is (as
  many processes, the same concurrency and client addresses) in the same rounds, all in
  rotating order: how far the engine is from what CPython can do, and how far CPython is
  from wrk; and, when the `liburing` package imports, the bare io_uring loop
  (bench/bare_uring.py: one linked chain of SQEs per connection, one CQE back, so almost
  no syscalls per connection): how far Python gets when it makes fewer syscalls than wrk.

    python -m bench replay_native [--seconds S] [--threads N] [--concurrency C] [--rounds R]
                                  [--server-procs P] [--profile]

`--profile` adds one cProfile'd engine run (where its loop's time goes, by call; its Python and
C calls per connection) and, when
py-spy is installed, one sampled by py-spy (the same, without cProfile's per-call cost).

Needs nginx (Debian's nginx-light) and wrk; traffic stays on 127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib.util import find_spec
from pathlib import Path

from bench.steady import steady_rate
from lvsprobe.dashboards.prometheus import free_port

NGINX_CONF = """daemon off; worker_processes {procs}; pid {tmp}/nginx.pid;
error_log {tmp}/error.log; events {{ worker_connections 8192; }}
http {{ access_log off; client_body_temp_path {tmp}; proxy_temp_path {tmp};
  fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  server {{ listen 127.0.0.1:{port} backlog=4096; location / {{
    add_header X-Backend rs1; return 200 "ok\\n"; }} }} }}
"""
ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from lvsprobe.cli import main; main()"]
TICK_S = 1 / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Figures:
    """One run's figures: ok connections/s over the steady window and over the whole
    process, client and server CPU µs per connection, the busiest server worker's busy
    share, and the 1-minute load average when it started."""

    steady_per_s: float
    whole_per_s: float
    client_cpu_us: float
    server_cpu_us: float
    server_busy: float
    load: float
    loop: Loop | None = None

    def line(self) -> str:
        text = (f"{self.steady_per_s:8.0f} conns/s steady, {self.whole_per_s:8.0f} whole "
                f"process; CPU/conn client {self.client_cpu_us:5.1f} us, server "
                f"{self.server_cpu_us:5.1f} us (busiest worker {self.server_busy:4.0%}); "
                f"load {self.load:.2f}")  # fmt: skip
        if self.loop is not None:
            text += "\n" + " " * 20 + self.loop.line()
        return text


@dataclass(frozen=True)
class Loop:
    """The engine processes' phases (means over them, seconds) and their loops' CPU (the
    thread's, and its user and system parts: the Python's and the kernel's) per ok
    connection: what the engine pays per connection, start-up and log apart. Of the
    start-up, `imports_s` went to starting Python and importing the command, `plan_s` to
    planning the flows; of what follows the loop, `write_s` to writing the run directory
    (of it `flows_s` to flows.parquet, `summary_s` to making the summary, while the Parquet
    file is written: the two overlap), the rest to leaving the process."""

    startup_s: float
    imports_s: float
    plan_s: float
    loop_s: float
    after_s: float
    write_s: float
    flows_s: float
    summary_s: float
    cpu_us: float
    user_us: float
    sys_us: float

    def line(self) -> str:
        return (f"engine process: start-up {self.startup_s:.2f} s (imports "
                f"{self.imports_s:.2f}, plan {self.plan_s:.2f}), loop {self.loop_s:.1f} s (its "
                f"thread's CPU {self.cpu_us:5.1f} us/conn: user {self.user_us:4.1f}, system "
                f"{self.sys_us:4.1f}), after {self.after_s:.2f} s (run directory "
                f"{self.write_s:.2f}: flows.parquet {self.flows_s:.2f}, summary "
                f"{self.summary_s:.2f})")  # fmt: skip


class Server:
    """nginx's worker processes: their CPU ticks, for the server's share of each run."""

    def __init__(self, master: int) -> None:
        self.master = master

    def ticks(self) -> dict[int, int]:
        children = Path(f"/proc/{self.master}/task/{self.master}/children").read_text().split()
        out = {}
        for pid in map(int, children):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[pid] = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        return out


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _measure(server: Server, run: Callable[[], tuple[float, int, Loop | None]]) -> Figures:
    """`run()` gives (steady rate, ok connections, engine loop); the rest is measured here."""
    load = os.getloadavg()[0]
    before, cpu0, wall0 = server.ticks(), _children_cpu_s(), time.monotonic()
    steady, ok, loop = run()
    wall = time.monotonic() - wall0
    client_s = _children_cpu_s() - cpu0
    after = server.ticks()
    spent = [(after[pid] - before.get(pid, 0)) * TICK_S for pid in after]
    per_conn_us = 1e6 / max(ok, 1)
    return Figures(steady, ok / wall, client_s * per_conn_us, sum(spent) * per_conn_us,
                   max(spent, default=0.0) / wall, load, loop)  # fmt: skip


def _bare(
    module: str, port: int, seconds: float, threads: int, concurrency: int, max_conns: int
) -> tuple[float, int, None]:
    """A bare loop (`module`: bench.bare_loop or bench.bare_uring) in `threads` processes: its
    rate is the sum of theirs (each runs `seconds`, started together; it has no start-up or
    drain to leave out)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    each = [str(port), str(concurrency // threads), str(seconds)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", module, *each, str(worker), str(max_conns)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for worker in range(threads)
    ]
    done = [json.loads(proc.communicate(timeout=seconds + 60)[0]) for proc in procs]
    return sum(d["ok"] / d["seconds"] for d in done), sum(d["ok"] for d in done), None


def _wrk(port: int, seconds: float, threads: int, concurrency: int) -> tuple[float, int, None]:
    argv = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{int(seconds)}s",
            "-H", "Connection: close", f"http://127.0.0.1:{port}/"]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Socket errors:[^\n]*|Non-2xx[^\n]*", out)
    if errors:
        print(f"    wrk: {errors.group(0)}")
    return rate, total, None


def _scenario(port: int, seconds: float, concurrency: int, worker: int, max_flows: int) -> str:
    """A closed loop from 250 client addresses of its own (127.0.<worker+1>.x)."""
    return (
        f"name: native-{worker}\ntarget: {{address: 127.0.0.1, port: {port}}}\n"
        f"clients: {{cidr: 127.0.{worker + 1}.1/24, count: 250}}\n"
        "flows: [{kind: http, path: /}]\n"
        f"arrival: {{model: closed, concurrency: {concurrency}}}\n"
        f"bounds: {{max_flows: {max_flows}, max_duration: {seconds}s}}\n"
    )


def _timed(module: object, name: str, spent: dict[str, float]) -> None:
    """`module.name` replaced by itself timed: its seconds are added to spent[name]."""
    function = getattr(module, name)

    def timed(*args: object, **kwargs: object) -> object:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - started

    setattr(module, name, timed)


def engine_cli() -> None:
    """`lvsprobe` with its epoll loop measured: the loop's CPU time (its thread's) and span,
    and the time spent importing, planning and writing the run directory, go to argv[1]
    (JSON); with argv[2] set, the loop's cProfile goes there. The rest of argv is the CLI's.
    (The modules timed here are the ones an epoll run imports anyway.)"""
    import cProfile

    import lvsprobe.cli.replay  # noqa: F401 (what the command imports first: timed with the rest)
    from lvsprobe.cli import main as cli
    from lvsprobe.replay import fastloop, flowlog, plan, rundir

    spent: dict[str, float] = {"imported_unix": time.time()}  # and the timed functions' seconds
    figures_path, profile_path, *argv = sys.argv[1:]
    loop = fastloop.FastRunner.run
    timed = ((plan, "make_plan"), (rundir, "write_run"), (flowlog, "flows_table"),
             (flowlog, "write_flows_table"), (rundir, "summarize_columns"))  # fmt: skip
    for module, name in timed:
        _timed(module, name, spent)

    def measured(self: fastloop.FastRunner) -> object:
        profile = cProfile.Profile() if profile_path else None
        cpu0, unix0 = time.thread_time(), time.time()
        usage0 = resource.getrusage(resource.RUSAGE_THREAD)
        if profile is not None:
            profile.enable()
        try:
            return loop(self)
        finally:
            if profile is not None:
                profile.disable()
                profile.dump_stats(profile_path)
            usage = resource.getrusage(resource.RUSAGE_THREAD)
            spent["cpu_s"] = time.thread_time() - cpu0
            spent["user_s"] = usage.ru_utime - usage0.ru_utime
            spent["sys_s"] = usage.ru_stime - usage0.ru_stime
            spent["ok"] = sum(r.outcome == "ok" for r in self.records)
            spent["start_unix"], spent["end_unix"] = unix0, time.time()

    fastloop.FastRunner.run = measured  # type: ignore[method-assign]
    sys.argv = ["lvsprobe", *argv]
    try:
        cli()
    finally:
        Path(figures_path).write_text(json.dumps(spent))


def _replay(tmp: Path, port: int, seconds: float, threads: int, concurrency: int,
            max_flows: int, profile: bool = False,
            spy: bool = False) -> tuple[float, int, Loop]:  # fmt: skip
    """`profile`: worker 0's loop under cProfile; `spy`: worker 0 under py-spy."""
    procs, runs = [], []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = "from bench.bench_replay_native import engine_cli; engine_cli()"
    launched = time.time()
    for worker in range(threads):
        path = tmp / f"s{worker}.yaml"
        path.write_text(_scenario(port, seconds, concurrency // threads, worker, max_flows))
        runs.append(tmp / f"run{worker}")
        prof = str(tmp / "engine.prof") if profile and worker == 0 else ""
        argv = [sys.executable, "-c", code, str(tmp / f"loop{worker}.json"), prof,
                "replay", "run", str(path), "--out", str(runs[-1]), "--json", "--no-progress",
                "--force", "--engine", "epoll"]  # fmt: skip
        if spy and worker == 0:
            argv = [str(shutil.which("py-spy")), "record", "--rate", "500", "--format", "raw",
                    "--output", str(tmp / "engine.spy"), "--", *argv]  # fmt: skip
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env))
    ok, phases = 0, []
    for worker, proc in enumerate(procs):
        out, _ = proc.communicate(timeout=seconds + 600)
        exited = time.time()
        # (py-spy says what it did on the same stdout)
        summary = json.loads("\n".join(x for x in out.splitlines() if not x.startswith("py-spy>")))
        ok += summary["ok"]
        if summary["errors"]:
            print(f"    engine: {summary['errors']} not ok: {summary['outcomes']}")
        done = json.loads((tmp / f"loop{worker}.json").read_text())
        phases.append((done["start_unix"] - launched, done["imported_unix"] - launched,
                       done["make_plan"], done["end_unix"] - done["start_unix"],
                       exited - done["end_unix"], done["write_run"],
                       done["flows_table"] + done["write_flows_table"],
                       done["summarize_columns"], done["cpu_s"], done["user_s"],
                       done["sys_s"]))  # fmt: skip
    mean = [sum(p[i] for p in phases) / threads for i in range(11)]
    per_conn_us = threads / max(ok, 1) * 1e6
    loop = Loop(*mean[:8], *(m * per_conn_us for m in mean[8:]))
    return steady_rate(runs), ok, loop


SYSCALLS = ("socket", "epoll", "connect", "recv", "send", "getsock", "setsock", "bind", "close")


def _where(tmp: Path) -> None:
    """The profiled engine's loop: its time in the socket and epoll calls (the
    kernel's work, which wrk pays too) and in Python, by module; cProfile's own overhead
    inflates the Python share (it charges every Python call), so read it as an upper bound."""
    stats = pstats.Stats(str(tmp / "engine.prof"))
    rows = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in rows.values())
    ok = max(1, json.loads((tmp / "loop0.json").read_text())["ok"])
    python_calls = sum(v[1] for k, v in rows.items() if k[0] != "~")
    c_calls = sum(v[1] for k, v in rows.items() if k[0] == "~")
    calls = {
        k[2]: v[2] for k, v in rows.items() if k[0] == "~" and any(w in k[2] for w in SYSCALLS)
    }
    by_module: dict[str, float] = {}
    for (file, _, name), v in rows.items():
        where = f"C {name}" if file == "~" else Path(file).name
        if file != "~" or name not in calls:
            by_module[where] = by_module.get(where, 0.0) + v[2]
    print(f"  where the profiled engine's loop spends its time ({total:.1f} s; per ok connection "
          f"{python_calls / ok:.1f} Python calls, {c_calls / ok:.1f} C calls):")  # fmt: skip
    print(f"    socket/epoll calls {sum(calls.values()) / total:6.1%}: " + ", ".join(
        f"{name.split()[1] if ' ' in name else name} {t / total:.1%}"
        for name, t in sorted(calls.items(), key=lambda kv: -kv[1])[:6]))  # fmt: skip
    print("    Python and other C calls, by module: " + ", ".join(
        f"{name} {t / total:.1%}"
        for name, t in sorted(by_module.items(), key=lambda kv: -kv[1])[:8]))  # fmt: skip


def _sampled(tmp: Path) -> None:
    """py-spy's samples of the engine's loop (FastRunner.run and below), by the function on
    top of the stack: a syscall's time falls on the Python line that made it."""
    own: dict[str, int] = {}
    for line in (tmp / "engine.spy").read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if any(f.startswith("FastRunner.run ") for f in frames):
            name = frames[-1].split(" (")[0]
            own[name] = own.get(name, 0) + int(count)
    total = sum(own.values()) or 1
    top = sorted(own.items(), key=lambda kv: -kv[1])[:10]
    print(
        f"  py-spy, the engine's loop ({total} samples), by function on top: "
        + ", ".join(f"{name} {n / total:.1%}" for name, n in top)
    )


def _spread(values: list[float]) -> str:
    return (
        f"min {min(values):.2f}x, median {statistics.median(values):.2f}x, max {max(values):.2f}x"
    )


# each round starts one further along: each goes first once (uring: when liburing imports)
ORDER = ("wrk", "engine", "bare", "uring") if find_spec("liburing") else ("wrk", "engine", "bare")
BARE = {"bare": "bench.bare_loop", "uring": "bench.bare_uring"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--server-procs", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="also profile one engine")
    args = parser.parse_args()
    if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()) or not shutil.which("wrk"):
        print("  nginx or wrk missing (Debian's nginx-light and wrk): skipped")
        return
    n, c, s = args.threads, args.concurrency, args.seconds
    ratios: dict[str, list[float]] = {}
    # The engine starts from bytecode, as an installed package does: with
    # PYTHONDONTWRITEBYTECODE set, each engine process would compile the checkout's sources
    # again (0.1-0.2 s), and its start-up would count that
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "lvsprobe"),
                    str(ROOT / "bench")], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-native-") as name:
        tmp = Path(name)
        port = free_port()
        conf = NGINX_CONF.format(tmp=tmp, port=port, procs=args.server_procs)
        (tmp / "nginx.conf").write_text(conf)
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        nginx = subprocess.Popen([binary, "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "e")])
        try:
            time.sleep(0.5)
            server = Server(nginx.pid)
            uring = " vs as many bare io_uring loops" if "uring" in ORDER else ""
            print(f"  {os.cpu_count()} CPUs; nginx {args.server_procs} worker(s); wrk -t{n} -c{c}"
                  f" vs {n} engine processes x {c // n} loops vs {n} bare CPython loops (the "
                  f"same){uring}; {s:g} s each, {args.rounds} rounds, order rotating")  # fmt: skip
            expected = 20_000.0
            for round_no in range(args.rounds):
                runs: dict[str, Figures] = {}
                turn = round_no % len(ORDER)
                for who in ORDER[turn:] + ORDER[:turn]:
                    bound = int(2 * expected / n * s) + 1000  # flows planned, per process
                    if who == "wrk":
                        runs[who] = _measure(server, lambda: _wrk(port, s, n, c))
                        expected = runs[who].steady_per_s
                    elif who == "engine":
                        runs[who] = _measure(server, partial(_replay, tmp, port, s, n, c, bound))
                    else:
                        bare = partial(_bare, BARE[who], port, s, n, c, bound)
                        runs[who] = _measure(server, bare)
                    print(f"    round {round_no + 1} {who:6s} {runs[who].line()}", flush=True)
                for key, value in _ratios(runs).items():
                    ratios.setdefault(key, []).append(value)
            bound = int(2 * expected / n * s) + 1000
            if args.profile:
                _replay(tmp, port, s, n, c, bound, profile=True)
                _where(tmp)
                if shutil.which("py-spy"):
                    _replay(tmp, port, s, n, c, bound, spy=True)
                    _sampled(tmp)
                else:
                    print("  py-spy missing (pip install py-spy): no sampled view")
        finally:
            nginx.terminate()
            nginx.wait(timeout=30)
    for key, values in ratios.items():
        print(f"  {key}: {_spread(values)}")


def _ratios(runs: dict[str, Figures]) -> dict[str, float]:
    """One round's ratios: the engine and the bare loop against wrk, the engine against the
    bare loop, and client CPU per connection."""
    wrk, ours, bare = runs["wrk"], runs["engine"], runs["bare"]
    out = {
        "ratio lvsprobe/wrk, steady window (target >= 1.0)": ours.steady_per_s / wrk.steady_per_s,
        "ratio lvsprobe/wrk, whole process": ours.whole_per_s / wrk.whole_per_s,
        "ratio bare CPython loop/wrk": bare.steady_per_s / wrk.steady_per_s,
        "ratio lvsprobe/bare CPython loop, steady window": ours.steady_per_s / bare.steady_per_s,
        "client CPU/conn lvsprobe/wrk, whole process": ours.client_cpu_us / wrk.client_cpu_us,
        "client CPU/conn bare CPython loop/wrk": bare.client_cpu_us / wrk.client_cpu_us,
    }
    if "uring" in runs:
        uring = runs["uring"]
        out["ratio bare io_uring loop/wrk"] = uring.steady_per_s / wrk.steady_per_s
        out["client CPU/conn bare io_uring loop/wrk"] = uring.client_cpu_us / wrk.client_cpu_us
    if ours.loop is not None:
        out["client CPU/conn lvsprobe/wrk, the engine's loop only"] = (
            ours.loop.cpu_us / wrk.client_cpu_us
        )
    return out


if __name__ == "__main__":
    main()
