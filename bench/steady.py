"""The rate both replay benches compare with wrk's: flows over the engines' steady window."""

from __future__ import annotations

from pathlib import Path


def steady_rate(runs: list[Path]) -> float:
    """ok flows per second that ended while every engine process (one run directory each)
    was running: start-up, planning and the last flows' drain are outside the window."""
    import pyarrow.compute as pc

    from lvsprobe.replay.flowlog import read_flows

    ends, spans = [], []
    for run in runs:
        table = read_flows(run)
        table = table.filter(pc.equal(table["outcome"], "ok"))
        if not table.num_rows:
            return 0.0
        origin = pc.subtract(table["start_unix"], table["start_s"])  # the run's clock at 0
        end = pc.add(origin, table["end_s"]).to_numpy()
        ends.append(end)
        spans.append((float(end.min()), float(end.max())))
    low, high = max(s[0] for s in spans), min(s[1] for s in spans)
    if high <= low:
        return 0.0
    return sum(int(((e >= low) & (e < high)).sum()) for e in ends) / (high - low)
