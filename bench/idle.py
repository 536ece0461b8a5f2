"""A run with nothing to do: 100,000 connections, none due.

cron starts `refresh_tokens` every few minutes whatever the table holds, so an idle run
must stay cheap as the table grows: the due query reads the partial indexes
conn_due_warm_idx / conn_due_idle_idx / conn_due_retry_idx, not the table.
Measured: the process wall time (what cron pays, Python and Django start-up included),
the command's own elapsed time, and EXPLAIN (ANALYZE, BUFFERS) of the due query's SQL
as lifecycle.due.connections_due sends it.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from django.db import connection as db_connection
from django.db import reset_queries
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from bench import seed
from bench.harness import Outcome, Row, analyze, manage, median
from integrations.lifecycle.due import connections_due
from integrations.models import ConnectionStatus, JiraConnection

CONNECTIONS = 100_000
RUNS = 5
WALL_GOAL = 1.0
INDEXES = ("conn_due_warm_idx", "conn_due_idle_idx", "conn_due_retry_idx")


def seed_idle(*, count: int) -> None:
    """The fleet as cost-follows-use leaves it between runs, none due (lifecycle.due):
    1 % in use (used within hours, tokens expiring in 20-60 minutes, outside the warm
    window's 15); 94 % idle (last used days ago or never, access tokens long expired,
    refresh tokens 1-29 days old, inside keep-alive's 30); 1 % failing and backing off;
    2 % needing reconnect (stale, outside every index)."""
    rng = random.Random(20261128)
    now = timezone.now()
    owners = seed.users(count, prefix="idle-")
    grants = seed.fake_grants(count, prefix="557058:idle-")
    expires: list[datetime | None] = []
    statuses: list[str] = []
    retry: list[datetime | None] = []
    fields: list[dict[str, Any]] = []
    for _ in range(count):
        draw = rng.random()
        issued = now - timedelta(days=rng.uniform(1, 29))
        if draw < 0.02:
            expires.append(now - timedelta(days=rng.randint(1, 200)))
            statuses.append(ConnectionStatus.NEEDS_RECONNECT)
            retry.append(None)
            fields.append({"tokens_issued_at": now - timedelta(days=rng.randint(31, 200)), "last_used_at": None})
        elif draw < 0.03:
            expires.append(now - timedelta(minutes=rng.uniform(1, 600)))
            statuses.append(ConnectionStatus.REFRESH_FAILING)
            retry.append(now + timedelta(minutes=rng.uniform(1, 60)))
            fields.append({"tokens_issued_at": issued, "last_used_at": now - timedelta(hours=rng.uniform(0, 48))})
        elif draw < 0.04:
            expires.append(now + timedelta(minutes=rng.uniform(20, 60)))
            statuses.append(ConnectionStatus.ACTIVE)
            retry.append(None)
            fields.append({"tokens_issued_at": now - timedelta(minutes=5), "last_used_at": now - timedelta(hours=3)})
        else:
            used = None if rng.random() < 0.2 else now - timedelta(days=rng.uniform(2, 60))
            expires.append(issued + timedelta(hours=1))
            statuses.append(ConnectionStatus.ACTIVE)
            retry.append(None)
            fields.append({"tokens_issued_at": issued, "last_used_at": used})
    seed.connections(
        owners,
        grants,
        expires_at=expires,
        statuses=statuses,
        next_attempt_at=retry,
        fields=fields,
    )
    analyze(JiraConnection._meta.db_table)


def due_query_plan() -> tuple[str, str]:
    """(SQL, EXPLAIN ANALYZE plan) of the query connections_due actually sends."""
    # A full query log (the connection keeps the last 9,000) would leave the capture empty.
    reset_queries()
    with CaptureQueriesContext(db_connection) as captured:
        due = connections_due(now=timezone.now())
    if due:
        raise AssertionError(f"{len(due)} connections are due; the idle benchmark expects none")
    sql = captured.captured_queries[-1]["sql"]
    with db_connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    return sql, plan


def measure(*, connections: int = CONNECTIONS, runs: int = RUNS) -> Outcome:
    seed_idle(count=connections)
    results: list[dict[str, Any]] = []
    for _ in range(runs):
        run = manage("refresh_tokens", "--json")
        summary = run.json()
        if summary["due"] != 0 or run.returncode != 0:
            raise AssertionError(f"idle run was not idle: {summary}")
        results.append(
            {
                "process_wall_seconds": round(run.wall_seconds, 3),
                "process_cpu_seconds": round(run.cpu_seconds, 3),
                "elapsed_seconds": summary["elapsed_seconds"],
            }
        )
    check = manage("check")
    startup = check.wall_seconds
    cpu = median([r["process_cpu_seconds"] for r in results])
    sql, plan = due_query_plan()
    wall = median([r["process_wall_seconds"] for r in results])
    inner = median([r["elapsed_seconds"] for r in results])
    uses = {name: name in plan for name in INDEXES}
    seq_scan = "Seq Scan" in plan
    execution = next((line.split(":", 1)[1].strip() for line in plan.splitlines() if "Execution Time" in line), "")
    outcome = Outcome("idle")
    outcome.rows = [
        Row(
            f"refresh_tokens, {connections} connections, none due",
            f"{wall:.2f} s wall (median of {runs})",
            f"< {WALL_GOAL:.0f} s",
            wall < WALL_GOAL,
        ),
        Row("  CPU of that process (user + system)", f"{cpu:.2f} s"),
        Row("  of which the run itself", f"{inner * 1000:.1f} ms"),
        Row("  baseline: manage.py check (start-up only)", f"{startup:.2f} s"),
        Row(
            "due query uses the partial indexes",
            ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in uses.items()) + f"; {execution}",
            "all three, no Seq Scan",
            all(uses.values()) and not seq_scan,
        ),
    ]
    outcome.data = {
        "connections": connections,
        "runs": results,
        "process_wall_median_seconds": wall,
        "process_cpu_median_seconds": cpu,
        "run_elapsed_median_seconds": inner,
        "startup_check_seconds": round(startup, 3),
        "goal_seconds": WALL_GOAL,
        "indexes_used": uses,
        "seq_scan": seq_scan,
        "due_query_sql": sql,
        "plan": plan,
    }
    return outcome
