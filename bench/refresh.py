"""Token refresh throughput: `manage.py refresh_tokens` at N workers against one at a time.

10,000 due connections hold live sandbox grants; the sandbox's token endpoint answers
after 100 ms. Each run is the real command in a new process (as cron starts it) with
`--json`; between runs every connection is made due again (its stored pair is the live
one, so the sandbox sees ordinary rotations, never a reuse).

* one at a time (`--concurrency 1`) on a sample of 1,000: all 10,000 at about 9/s would
  take 18 minutes, and one refresh costs the same whichever it is (the run prints the
  rate the latency plus one refresh's own cost predict, to check the sample against);
* a sweep of concurrencies on samples, to find where throughput stops growing;
* the command's default concurrency (no flag) on all 10,000: the headline ratio;
* K = 1, 2, 4, 8 runs at the default settings started together over all 10,000, as cron
  on K hosts would start them: throughput, CPU per refresh, wasted claims, and the peak
  PostgreSQL connections of each run (pg_stat_activity, sampled throughout; each process
  shows under its own application_name);
* CPU per refresh and a cProfile of 500 refreshes in-process (no injected latency: CPU is
  what it measures), next to the CPU of a bare `requests` POST refreshing a token at the
  same sandbox, measured in the same run: the ratio means the same on any machine.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import time
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

# The yardstick: a token refresh with nothing but requests (bare_post_cpu).
import requests
from django.db import connection as db_connection
from django.db import reset_queries
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from bench import seed
from bench.harness import (
    CommandRun,
    ConnectionSampler,
    Outcome,
    Row,
    analyze,
    manage,
    manage_parallel,
    with_application_name,
)
from integrations.lifecycle import run as refresh_run
from integrations.lifecycle.refresh import RefreshOutcome
from integrations.models import ConnectionEvent, JiraConnection
from sandbox.config import CLIENT_ID as SANDBOX_CLIENT_ID
from sandbox.config import CLIENT_SECRET as SANDBOX_CLIENT_SECRET
from sandbox.testing import SandboxProcess

LATENCY_MS = 100
CONNECTIONS = 10_000
SERIAL_SAMPLE = 1000
SWEEP = (8, 16, 32, 64, 128)
# Runs started together at the default settings, as cron on K hosts would start them.
RUNS = (1, 2, 4, 8)
# Not slower than one run, give or take this much noise on a shared machine.
RUNS_NOISE = 0.05
BARE_POSTS = 500
PROFILE_REFRESHES = 500
RATIO_GOAL = 30.0
BOUND_GOAL = 0.5


def default_concurrency() -> int:
    from integrations.management.commands.refresh_tokens import Command

    parser = Command().create_parser("manage.py", "refresh_tokens")
    return int(parser.get_default("concurrency"))


def sweep_sample(concurrency: int, connections: int) -> int:
    # Long enough for the pool to reach its steady state (about 30 rounds per worker).
    return min(connections, max(2000, 32 * concurrency))


def seed_due(sandbox: SandboxProcess, *, count: int) -> None:
    grants = sandbox.client.mint(count)
    owners = seed.users(count, prefix="refresh-")
    seed.connections(owners, grants, expires_at=timezone.now() - timedelta(minutes=5))
    analyze(JiraConnection._meta.db_table)


def rearm() -> None:
    """Every connection due again, and the audit trail emptied (a run adds one row each)."""
    JiraConnection.objects.update(access_token_expires_at=timezone.now() - timedelta(minutes=5))
    with db_connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {db_connection.ops.quote_name(ConnectionEvent._meta.db_table)}")
    analyze(JiraConnection._meta.db_table, ConnectionEvent._meta.db_table)


def run_command(sandbox: SandboxProcess, *, concurrency: int | None, limit: int | None) -> dict[str, Any]:
    """One `refresh_tokens --json` process; `concurrency` None leaves the default."""
    rearm()
    args = ["refresh_tokens", "--json"]
    if concurrency is not None:
        args += ["--concurrency", str(concurrency)]
    if limit is not None:
        args += ["--limit", str(limit)]
    counters_before = sandbox.client.counters()
    sandbox_cpu = sandbox.cpu_seconds()
    run: CommandRun = manage(*args)
    counters_after = sandbox.client.counters()
    summary = run.json()
    workers = concurrency if concurrency is not None else default_concurrency()
    refreshed = int(summary["refreshed"])
    elapsed = float(summary["elapsed_seconds"])
    rate = refreshed / elapsed if elapsed > 0 else 0.0
    bound = workers / (LATENCY_MS / 1000)
    return {
        "concurrency": workers,
        "flag": concurrency is not None,
        "limit": limit,
        "due": summary["due"],
        "refreshed": refreshed,
        "transient_failures": summary["transient_failures"],
        "errors": summary["errors"],
        "exit_code": run.returncode,
        "elapsed_seconds": elapsed,
        "process_wall_seconds": round(run.wall_seconds, 3),
        "refreshes_per_second": round(rate, 1),
        "bound_per_second": bound,
        "share_of_bound": round(rate / bound, 3),
        "cpu_seconds": round(run.cpu_seconds, 2),
        "cpu_ms_per_refresh": round(1000 * run.cpu_seconds / refreshed, 3) if refreshed else None,
        "sandbox_cpu_seconds": round(sandbox.cpu_seconds() - sandbox_cpu, 2),
        "sandbox_refreshes": counters_after["refreshes"] - counters_before["refreshes"],
        "sandbox_reuse_detections": counters_after["reuse_detections"] - counters_before["reuse_detections"],
        "stderr_tail": run.stderr[-500:] if run.returncode else "",
    }


def run_concurrent(sandbox: SandboxProcess, *, runs: int) -> dict[str, Any]:
    """`runs` refresh_tokens at the default settings started at once over the same due
    connections; the batch claims split the work, the sandbox counts every refresh
    exactly once or says not, and a sampler watches each run's database connections."""
    rearm()
    counters_before = sandbox.client.counters()
    db_url = os.environ["DATABASE_URL"]
    args = ["refresh_tokens", "--json"]
    envs = [{"DATABASE_URL": with_application_name(db_url, f"bench-refresh-{n}")} for n in range(runs)]
    with ConnectionSampler(url=db_url, database=str(db_connection.settings_dict["NAME"])) as sampler:
        results = manage_parallel(*([args] * runs), envs=envs)
    counters_after = sandbox.client.counters()
    summaries = [run.json() for run in results]
    refreshed = sum(int(s["refreshed"]) for s in summaries)
    # Each process's own elapsed time (its start-up excluded, as in the single runs).
    elapsed = max(float(s["elapsed_seconds"]) for s in summaries)
    rate = refreshed / elapsed if elapsed > 0 else 0.0
    concurrency = default_concurrency()
    bound = runs * concurrency / (LATENCY_MS / 1000)
    cpu = results[0].cpu_seconds
    return {
        "runs": runs,
        "concurrency": concurrency,
        "refreshed": refreshed,
        "refreshed_per_run": [s["refreshed"] for s in summaries],
        "wasted_claims": sum(int(s["wasted_claims"]) for s in summaries),
        "claim_statements": sum(int(s["claim_statements"]) for s in summaries),
        "transient_failures": sum(int(s["transient_failures"]) for s in summaries),
        "exit_codes": [run.returncode for run in results],
        "elapsed_seconds": elapsed,
        "process_wall_seconds": round(results[0].wall_seconds, 3),
        "refreshes_per_second": round(rate, 1),
        "bound_per_second": bound,
        "share_of_bound": round(rate / bound, 3),
        # All the processes' CPU, start-up included, over every refresh they made.
        "cpu_seconds": round(cpu, 2),
        "cpu_ms_per_refresh": round(1000 * cpu / refreshed, 3) if refreshed else None,
        "peak_connections_per_run": sampler.peak("bench-refresh-"),
        "peak_connections_all_runs": sum(
            n for name, n in sampler.peak_by_name.items() if name.startswith("bench-refresh-")
        ),
        "peak_connections_database": sampler.peak_database,
        "samples": sampler.samples,
        "sandbox_refreshes": counters_after["refreshes"] - counters_before["refreshes"],
        "sandbox_reuse_detections": counters_after["reuse_detections"] - counters_before["reuse_detections"],
        "stderr_tail": next((run.stderr[-500:] for run in results if run.returncode), ""),
    }


def bare_post_cpu(sandbox: SandboxProcess, *, posts: int = BARE_POSTS) -> dict[str, Any]:
    """CPU of one token refresh done with nothing but `requests` (a Session, a JSON POST,
    the JSON reply parsed), at the same sandbox: the yardstick for the portal's figure."""
    grants = sandbox.client.mint(count=posts)
    url = f"{sandbox.url}/oauth/token"
    cpu: list[float] = []
    with requests.Session() as session:
        for round_grants in (grants[: posts // 2], grants[posts // 2 :]):
            started = time.process_time()
            for grant in round_grants:
                reply = session.post(
                    url,
                    json={
                        "grant_type": "refresh_token",
                        "client_id": SANDBOX_CLIENT_ID,
                        "client_secret": SANDBOX_CLIENT_SECRET,
                        "refresh_token": grant["refresh_token"],
                    },
                    timeout=(5, 20),
                )
                reply.raise_for_status()
                reply.json()
            cpu.append((time.process_time() - started) / len(round_grants))
    # The better of two halves, as for the refresh itself: other work only adds time.
    return {"posts": posts, "cpu_us_per_post": round(1e6 * min(cpu), 1)}


def recommend(sweep: Sequence[dict[str, Any]]) -> int:
    """The fastest concurrency that still gets half its bound; past it, more workers
    mostly add database connections and contention for the one core Python can use."""
    good = [r for r in sweep if r["share_of_bound"] >= BOUND_GOAL and not r["transient_failures"]]
    best = max(good or sweep, key=lambda r: r["refreshes_per_second"])
    return int(best["concurrency"])


# --- Profile ------------------------------------------------------------------------------

# (label, [(file suffix, function name), ...]): cumulative CPU per refresh of each step.
STEPS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "claim and read: batch UPDATE … SKIP LOCKED RETURNING (PostgreSQL)",
        (("integrations/lifecycle/refresh.py", "claim"),),
    ),
    ("claim: one-row UPDATE (SQLite path)", (("integrations/lifecycle/refresh.py", "_claim"),)),
    (
        "pool: check out (with its health check) and return",
        (("psycopg_pool/pool.py", "getconn"), ("psycopg_pool/pool.py", "putconn")),
    ),
    ("token call (HTTP + JSON + TokenSet)", (("integrations/lifecycle/refresh.py", "_call_refresh"),)),
    ("store rotated pair: CAS UPDATE", (("integrations/lifecycle/refresh.py", "_update_surviving_outage"),)),
    ("audit event INSERT", (("integrations/lifecycle/events.py", "event_record"),)),
    ("connection read after a one-row claim: SELECT (SQLite path)", (("integrations/lifecycle/refresh.py", "_read"),)),
    ("due query (once per run)", (("integrations/lifecycle/due.py", "connections_due"),)),
    ("Fernet decrypt (the refresh token of each row read)", (("integrations/fields.py", "from_db_value"),)),
    ("Fernet encrypt (2 tokens per write)", (("fernet_fields/fields.py", "get_db_prep_save"),)),
    # Two separate ORM costs: filter() turning Q objects into a WHERE tree, then the
    # compiler turning the tree into SQL text.
    ("ORM: building querysets (filter(), Q objects)", (("django/db/models/sql/query.py", "add_q"),)),
    ("ORM: compiling them to SQL", (("django/db/models/sql/compiler.py", "as_sql"),)),
    ("Django DB execute (driver, wire)", (("django/db/backends/utils.py", "execute"),)),
    ("  of which psycopg client-side binding", (("psycopg/_queries.py", "convert"),)),
    ("requests Session.request", (("requests/sessions.py", "request"),)),
    ("  of which urllib3 (connection pool, http.client)", (("urllib3/connectionpool.py", "urlopen"),)),
)

LAYERS = (
    ("cryptography (Fernet, HMAC, base64)", ("cryptography", "fernet", "base64", "hmac")),
    ("psycopg driver", ("psycopg",)),
    ("Django ORM and DB layer", ("django/db",)),
    ("HTTP client (requests, urllib3, http.client, socket)", ("requests/", "urllib3", "http/client", "socket", "ssl")),
    ("json", ("json/",)),
    ("Django other", ("django/",)),
    ("portal code (integrations/)", ("integrations/",)),
)


def _layer(filename: str, function: str) -> str:
    where = filename if filename != "~" else function
    for label, needles in LAYERS:
        if any(needle in where for needle in needles):
            return label
    return "builtins and other stdlib" if filename == "~" else "other Python"


def _refresh_in_process(refreshes: int) -> tuple[int, float, float]:
    """(refreshed, CPU seconds, wall seconds) of one in-process run at concurrency 1."""
    rearm()
    wall = time.perf_counter()
    cpu = time.process_time()
    summary = refresh_run.refresh_due(refresh_run.RunOptions(concurrency=1, limit=refreshes))
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    return max(1, summary.counts[RefreshOutcome.REFRESHED]), cpu, wall


ROUNDS = 3


def cpu_per_refresh(refreshes: int) -> tuple[float, float]:
    """(CPU, wall) seconds per refresh: the best of ROUNDS runs, since other work on the
    machine only ever adds time."""
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(ROUNDS):
        done, seconds, elapsed = _refresh_in_process(refreshes)
        cpu.append(seconds / done)
        wall.append(elapsed / done)
    return min(cpu), min(wall)


def profile(sandbox: SandboxProcess, *, refreshes: int = PROFILE_REFRESHES) -> dict[str, Any]:
    """Where a refresh spends its CPU: `refreshes` refreshes, one worker, in this process,
    without injected latency (waiting costs no CPU).

    Measured twice: plain, for the true CPU per refresh, then under cProfile (CPU clock)
    for the split. cProfile's own cost inflates every function call, so the profile's
    figures are shown as shares and scaled to the plain run's total.
    """
    sandbox.client.faults({})
    per_refresh, wall_per_refresh = cpu_per_refresh(refreshes)
    rearm()
    # The capture keeps at most 9,000 queries in the connection's log: start it empty.
    reset_queries()
    profiler = cProfile.Profile(time.process_time)
    with CaptureQueriesContext(db_connection) as captured:
        profiler.enable()
        summary = refresh_run.refresh_due(refresh_run.RunOptions(concurrency=1, limit=refreshes))
        profiler.disable()
    profiled_done = max(1, summary.counts[RefreshOutcome.REFRESHED])
    stats = pstats.Stats(profiler)
    entries: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    profiled_cpu = sum(tottime for (_, _, tottime, _, _) in entries.values()) or 1.0

    def share(seconds: float) -> dict[str, float]:
        return {
            "share": round(seconds / profiled_cpu, 4),
            "cpu_us_per_refresh": round(1e6 * per_refresh * seconds / profiled_cpu, 1),
        }

    steps = []
    for label, functions in STEPS:
        cumulative = sum(
            ct
            for (f, _, name), (_, _, _, ct, _) in entries.items()
            if any(f.endswith(suffix) and name == function for suffix, function in functions)
        )
        steps.append({"step": label, **share(cumulative)})
    layers: dict[str, float] = {}
    for (filename, _, function), (_, _, tottime, _, _) in entries.items():
        layer = _layer(filename, function)
        layers[layer] = layers.get(layer, 0.0) + tottime
    top = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:20]
    # The due query is a UNION of parenthesised SELECTs.
    statements = Counter(q["sql"].lstrip("(").split(None, 1)[0].upper() for q in captured.captured_queries)
    return {
        "refreshes": refreshes,
        "rounds": ROUNDS,
        "wall_ms_per_refresh": round(1e3 * wall_per_refresh, 2),
        "cpu_us_per_refresh": round(1e6 * per_refresh, 1),
        # The GIL keeps one process's Python on one core at a time.
        "single_process_ceiling_per_second": round(1 / per_refresh, 1),
        "profiled_cpu_us_per_refresh": round(1e6 * profiled_cpu / profiled_done, 1),
        "queries_per_refresh": round(len(captured.captured_queries) / profiled_done, 2),
        "statements_per_refresh": {k: round(v / profiled_done, 2) for k, v in statements.most_common()},
        "steps": steps,
        "layers": [
            {"layer": name, **share(seconds)} for name, seconds in sorted(layers.items(), key=lambda kv: -kv[1])
        ],
        "top_functions": [
            {
                "function": f"{filename.rsplit('site-packages/', 1)[-1]}:{line} {name}",
                "calls_per_refresh": round(calls / profiled_done, 2),
                "self": share(tottime),
                "cumulative": share(cumtime),
            }
            for (filename, line, name), (_, calls, tottime, cumtime, _) in top
        ],
    }


# --- The benchmark --------------------------------------------------------------------------


def measure(
    sandbox: SandboxProcess,
    *,
    connections: int = CONNECTIONS,
    serial_sample: int = SERIAL_SAMPLE,
    sweep: Sequence[int] = SWEEP,
    runs: Sequence[int] = RUNS,
    profile_refreshes: int = PROFILE_REFRESHES,
) -> Outcome:
    seed_due(sandbox, count=connections)
    default = default_concurrency()
    sandbox.client.faults({"token": {"latency_ms": LATENCY_MS}})
    try:
        serial = run_command(sandbox, concurrency=1, limit=serial_sample)
        sweep_runs = [run_command(sandbox, concurrency=c, limit=sweep_sample(c, connections)) for c in sweep]
        headline = run_command(sandbox, concurrency=None, limit=None)
        recommended = recommend(sweep_runs)
        at_recommended = (
            run_command(sandbox, concurrency=recommended, limit=None) if recommended != default else headline
        )
        parallel = [run_concurrent(sandbox, runs=k) for k in runs]
    finally:
        sandbox.client.faults({})
    profiled = profile(sandbox, refreshes=min(profile_refreshes, connections))
    bare = bare_post_cpu(sandbox, posts=min(BARE_POSTS, connections))

    # One refresh after another: each waits the latency, then spends its own wall time.
    serial_expected = 1 / (LATENCY_MS / 1000 + profiled["wall_ms_per_refresh"] / 1000)
    base = serial["refreshes_per_second"] or 1.0
    ratio = headline["refreshes_per_second"] / base
    ratio_recommended = at_recommended["refreshes_per_second"] / base
    outcome = Outcome("refresh")
    outcome.rows = [
        Row(
            f"--concurrency 1 ({serial['refreshed']} of {connections} due)",
            f"{serial['refreshes_per_second']:.1f}/s",
            f"bound {serial['bound_per_second']:.0f}/s; expected {serial_expected:.1f}/s",
        ),
    ]
    for run in sweep_runs:
        outcome.rows.append(
            Row(
                f"--concurrency {run['concurrency']} ({run['refreshed']} refreshed)",
                f"{run['refreshes_per_second']:.0f}/s = {run['share_of_bound']:.0%} of bound",
                f"bound {run['bound_per_second']:.0f}/s",
            )
        )
    outcome.rows += [
        Row(
            f"default (--concurrency {default}), all {headline['refreshed']}",
            f"{headline['refreshes_per_second']:.0f}/s in {headline['elapsed_seconds']:.1f} s",
        ),
        Row("default / one at a time", f"{ratio:.1f}x", f">= {RATIO_GOAL:.0f}x", ratio >= RATIO_GOAL),
        Row(
            "default: share of concurrency / latency",
            f"{headline['share_of_bound']:.0%}",
            f">= {BOUND_GOAL:.0%}",
            headline["share_of_bound"] >= BOUND_GOAL,
        ),
        Row("recommended concurrency", str(recommended), f"default is {default}"),
    ]
    if at_recommended is not headline:
        outcome.rows += [
            Row(
                f"--concurrency {recommended}, all {at_recommended['refreshed']}",
                f"{at_recommended['refreshes_per_second']:.0f}/s = {ratio_recommended:.1f}x, "
                f"{at_recommended['share_of_bound']:.0%} of bound",
                f">= {RATIO_GOAL:.0f}x, >= {BOUND_GOAL:.0%}",
                ratio_recommended >= RATIO_GOAL and at_recommended["share_of_bound"] >= BOUND_GOAL,
            ),
        ]
    one_run = parallel[0]["refreshes_per_second"] or 1.0
    for run in parallel:
        run_ratio = run["refreshes_per_second"] / base
        outcome.rows.append(
            Row(
                f"{run['runs']} run(s) at the default settings, all {run['refreshed']}",
                f"{run['refreshes_per_second']:.0f}/s = {run_ratio:.1f}x one at a time, "
                f"{run['cpu_ms_per_refresh']} ms CPU/refresh, {run['wasted_claims']} wasted claims, "
                f"peak {run['peak_connections_per_run']} PostgreSQL connections per run "
                f"({run['peak_connections_all_runs']} all runs), {run['sandbox_reuse_detections']} reuses",
                f"not slower than 1 run (-{RUNS_NOISE:.0%}), wasted < 5 %",
                run["refreshes_per_second"] >= (1 - RUNS_NOISE) * one_run
                and run["wasted_claims"] < 0.05 * connections
                and run["sandbox_refreshes"] == connections,
            )
        )
    outcome.rows.append(
        Row(
            "CPU per refresh, one worker, no latency",
            f"{profiled['cpu_us_per_refresh'] / 1000:.2f} ms, {profiled['queries_per_refresh']:g} queries",
            f"one process tops out near {profiled['single_process_ceiling_per_second']:.0f}/s",
        )
    )
    cost_in_posts = profiled["cpu_us_per_refresh"] / bare["cpu_us_per_post"]
    outcome.rows.append(
        Row(
            "CPU per refresh / bare requests POST (same run)",
            f"{cost_in_posts:.1f}x ({profiled['cpu_us_per_refresh'] / 1000:.2f} ms / "
            f"{bare['cpu_us_per_post'] / 1000:.2f} ms)",
            "machine-independent",
        )
    )
    outcome.data = {
        "connections": connections,
        "token_latency_ms": LATENCY_MS,
        "default_concurrency": default,
        "serial": serial,
        "serial_expected_per_second": round(serial_expected, 2),
        "sweep": sweep_runs,
        "default_run": headline,
        "recommended_concurrency": recommended,
        "recommended_run": at_recommended,
        "concurrent_runs": parallel,
        "bare_post": bare,
        "refresh_cost_in_bare_posts": round(cost_in_posts, 2),
        "ratio_default_vs_serial": round(ratio, 2),
        "ratio_recommended_vs_serial": round(ratio_recommended, 2),
        "goals": {"ratio": RATIO_GOAL, "share_of_bound": BOUND_GOAL},
        "profile": profiled,
    }
    return outcome
