"""Run every benchmark module `bench/bench_*.py` (its `main()`), or those named on the
command line: `python -m bench [conn export ...] [-- OPTIONS]` (options after `--` go to
each named benchmark, e.g. `python -m bench conn -- --runs 3`)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def discover() -> list[str]:
    """Module names `bench_*` next to this file, sorted."""
    here = Path(__file__).parent
    return sorted(
        info.name for info in pkgutil.iter_modules([str(here)]) if info.name.startswith("bench_")
    )


def main(argv: list[str]) -> int:
    options: list[str] = []
    if "--" in argv:
        argv, options = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    names = discover()
    if argv:
        wanted = {a if a.startswith("bench_") else f"bench_{a}" for a in argv}
        unknown = wanted - set(names)
        if unknown:
            print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; have {', '.join(names)}")
            return 2
        names = [n for n in names if n in wanted]
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        run = getattr(module, "main", None)
        if run is None:
            print(f"== {name}: no main(), skipped")
            continue
        print(f"== {name}", flush=True)
        started = time.monotonic()
        saved, sys.argv = sys.argv, [f"bench.{name}", *options]  # each main() parses its own
        try:
            run()
        finally:
            sys.argv = saved
        print(f"== {name} done in {time.monotonic() - started:.1f} s wall\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
