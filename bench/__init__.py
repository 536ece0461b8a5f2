"""Performance benchmarks, reported as ratios against a baseline measured in the same run.

`python -m bench` (or `make bench`) runs them all against PostgreSQL and a sandbox
process, prints a table and writes bench/results/latest.json; `python -m bench NAME`
runs one (refresh, idle, queries, myjira, load, webhooks, cost). Nothing here is a timed assertion:
the test suite only checks that this code still runs (tests/test_bench_smoke.py).
Results and how to read them: docs/benchmarks.md.
"""

from __future__ import annotations

BENCHMARKS = ("refresh", "idle", "queries", "myjira", "load", "webhooks", "cost")
