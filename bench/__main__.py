"""`python -m bench [refresh|idle|queries|myjira|load|webhooks|cost ...] [--quick]`

Starts a sandbox process, creates and migrates the bench database (BENCH_DATABASE_URL,
default postgres://postgres@127.0.0.1:5432/bench_jiraconnect), runs the benchmarks,
prints a table and merges the figures into bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

from bench import BENCHMARKS
from bench.harness import (
    BenchError,
    Outcome,
    bench_database_url,
    configure_portal,
    ensure_database,
    format_table,
    load_average,
    machine_info,
    now_iso,
    reset_data,
    start_sandbox,
    write_results,
)
from sandbox.testing import SandboxProcess


def _runners(sandbox: SandboxProcess, *, quick: bool) -> dict[str, Callable[[], Outcome]]:
    # Imported once Django is set up: these modules import the portal's models.
    from bench import cost, idle, load, myjira, queries, refresh, webhooks

    if quick:
        return {
            "refresh": lambda: refresh.measure(
                sandbox,
                connections=1000,
                serial_sample=50,
                sweep=(8, 32),
                runs=(1, 2),
                profile_refreshes=200,
            ),
            "idle": lambda: idle.measure(connections=10_000, runs=3),
            "queries": lambda: queries.measure(control=sandbox.client),
            "myjira": lambda: myjira.measure(control=sandbox.client, repeats=3),
            "load": lambda: load.measure(control=sandbox.client, seconds=3),
            "webhooks": lambda: webhooks.measure(seconds=2, jira_connections=50),
            "cost": lambda: cost.measure(
                control=sandbox.client, connections=2000, validate_after=200, validate_before=20
            ),
        }
    return {
        "refresh": lambda: refresh.measure(sandbox),
        "idle": lambda: idle.measure(),
        "queries": lambda: queries.measure(control=sandbox.client),
        "myjira": lambda: myjira.measure(control=sandbox.client),
        "load": lambda: load.measure(control=sandbox.client),
        "webhooks": lambda: webhooks.measure(),
        "cost": lambda: cost.measure(control=sandbox.client),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the bench, not the portal")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    names = list(dict.fromkeys(args.names)) or list(BENCHMARKS)

    db_url = bench_database_url()
    meta = {
        "date": now_iso(),
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(),
        "quick": args.quick,
        "database": db_url.rsplit("@", 1)[-1],
    }
    sandbox: SandboxProcess | None = None
    outcomes: list[Outcome] = []
    try:
        ensure_database(db_url)
        sandbox = start_sandbox()
        configure_portal(sandbox_url=sandbox.url, db_url=db_url)
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT version()")
            meta["postgres"] = cursor.fetchone()[0].split(" on ")[0]
        runners = _runners(sandbox, quick=args.quick)
        for name in names:
            reset_data()
            sandbox.client.reset()
            load = load_average()
            started = time.monotonic()
            print(f"bench: {name}…", file=sys.stderr, flush=True)
            outcome = runners[name]()
            outcome.data["load_average_before"] = load
            outcome.data["load_average_after"] = load_average()
            outcome.data["bench_seconds"] = round(time.monotonic() - started, 1)
            outcomes.append(outcome)
            write_results(outcomes, meta=meta)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    finally:
        if sandbox is not None:
            sandbox.stop()
    print(format_table(outcomes))
    print(f"\nWritten to bench/results/latest.json ({meta['date']}).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
