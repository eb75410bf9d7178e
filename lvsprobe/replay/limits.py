"""Upper bounds of a scenario file, from what one host really drives, declared once: the
loader enforces them, `replay schema` prints them, `replay import` writes within them.

One host opens thousands to tens of thousands of TCP connections per second (28k ephemeral
ports per client address, TIME_WAIT, one Python event loop); a run lasts minutes to hours.
A run keeps its plan and flow records in memory (roughly 0.2 KB planned + 0.5 KB recorded
per flow), so a million flows is about 0.7 GB: 100 s at 10k conn/s, 17 min at 1k conn/s.
Longer soaks hold their connections (`hold:`) or chain runs. A value past a bound is almost
always a typo (an extra zero); the error names the bound.
"""

from __future__ import annotations

MAX_SCENARIO_BYTES = 8 << 20  # a hand-written scenario is a few KB; recorded ones ~60 B/flow
MAX_NESTING = 16  # mappings and lists inside each other; a scenario needs 4
MAX_FLOWS = 1_000_000  # bounds.max_flows
MAX_RECORDED = 100_000  # entries of `recorded:` (replay import keeps the first ones)
MAX_MIX_ENTRIES = 100  # entries of `flows:`; a mix is a handful of kinds
MAX_RATE_PER_S = 100_000.0  # arrival.rate: above what one host drives
MAX_IN_FLIGHT = 10_000  # arrival.concurrency, burst_size, connections: sockets open at once
MAX_CLIENTS = 65_536  # client pool addresses
MAX_RUN_S = 24 * 3600.0  # bounds.max_duration, and every other duration (hold, think, ...)
MAX_FLOW_TIMEOUT_S = 3600.0  # bounds.flow_timeout, heartbeat_timeout
MAX_STAGES = 100  # arrival.stages: a profile is a handful of ramps and plateaus
MAX_THRESHOLDS = 100  # thresholds: and --threshold: gates of one run
MIN_HEARTBEAT_S = 0.001  # a held flow's heartbeat: faster is a busy loop, not a heartbeat

LIMITS_HELP = f"""\
Bounds (one host: thousands to tens of thousands of conn/s, runs of minutes to hours):
  file size {MAX_SCENARIO_BYTES >> 20} MiB, no YAML anchors or aliases, nesting {MAX_NESTING}
  max_flows <= {MAX_FLOWS:,}   recorded <= {MAX_RECORDED:,} entries   flows <= {MAX_MIX_ENTRIES}
  rate, start_rate, target <= {MAX_RATE_PER_S:,.0f}/s   concurrency, burst_size, \
connections <= {MAX_IN_FLIGHT:,}   clients <= {MAX_CLIENTS:,}
  stages <= {MAX_STAGES}   thresholds <= {MAX_THRESHOLDS}
  durations <= {MAX_RUN_S / 3600:g}h   flow_timeout, heartbeat_timeout <= \
{MAX_FLOW_TIMEOUT_S / 3600:g}h   heartbeat >= {MIN_HEARTBEAT_S * 1000:g}ms (with hold)"""
