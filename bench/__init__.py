"""Benchmarks: `python -m bench` runs every `bench/bench_*.py` module's `main()`.

Benchmarks print figures and ratios; they never assert on time (tests do not either).
"""
