"""Overlapping runs at the default settings share the due set within a bounded number of
PostgreSQL connections, while the web tier keeps answering.

N `manage.py refresh_tokens` processes start at once (cron on N hosts), at the default
`--concurrency` and the default pool, against a strict sandbox (leeway 0: a reused
refresh token kills the grant) whose token endpoint answers after 100 ms. A thread
samples pg_stat_activity throughout, each process's sessions under its own
application_name; the portal under gunicorn answers /healthz (a database query) all
along. Every due connection must be refreshed exactly once, by one of the runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from integrations.lifecycle.run import RunOptions
from integrations.models import ConnectionStatus, JiraConnection
from sandbox.testing import SandboxClient
from tests.proof.harness import (
    RefreshProcess,
    Seeded,
    StartSandbox,
    WebPoller,
    WebProcess,
    connection_sampler,
    delta,
    record,
    seed_connections,
    stopwatch,
    versions,
    wait_for_connection_slots,
)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

TOKEN_LATENCY_MS = 100
WASTE_LIMIT = 0.05


def pool_max_size() -> int:
    return int(settings.DATABASES["default"]["OPTIONS"]["pool"]["max_size"])


def overlapping_runs(sandbox: SandboxClient, seeded: Seeded, logs: Path, *, runs: int) -> dict[str, Any]:
    before = versions(seeded.ids)
    counters = sandbox.counters()
    # The runs at their bound, the web worker's pool, this process and the sampler.
    wait_for_connection_slots(runs * pool_max_size() + pool_max_size() + 2)
    web = WebProcess(sandbox, logs)
    try:
        with connection_sampler() as sampler, WebPoller(web, "/healthz") as poller, stopwatch() as timing:
            processes = [RefreshProcess(sandbox.base_url, logs, f"run-{n}") for n in range(runs)]
            results = [process.wait() for process in processes]
    finally:
        web_log = web.stop()
    after = versions(seeded.ids)
    summaries = [result.summary for result in results]
    stderr = "\n".join(result.stderr for result in results)
    due = len(seeded.ids)
    wasted = sum(int(s["wasted_claims"]) for s in summaries)
    return {
        "runs": runs,
        "due": due,
        "concurrency": RunOptions.concurrency,
        "pool_max_size": pool_max_size(),
        "token_latency_ms": TOKEN_LATENCY_MS,
        "seconds": timing["seconds"],
        "exit_codes": [result.returncode for result in results],
        "refreshed_per_run": [int(s["refreshed"]) for s in summaries],
        "claimed_per_run": [int(s["due"]) for s in summaries],
        "claim_statements": sum(int(s["claim_statements"]) for s in summaries),
        "wasted_claims": wasted,
        "wasted_share": round(wasted / due, 4),
        "transient_failures": sum(int(s["transient_failures"]) for s in summaries),
        "peak_connections_per_run": sampler.peak("refresh-"),
        "peak_connections_web": sampler.peak("web"),
        "peak_connections_test_database": sampler.peak_database,
        "peak_connections_server": sampler.peak_server,
        "samples": sampler.samples,
        "too_many_clients": (stderr + web_log).count("too many clients"),
        "tracebacks": (stderr + web_log).count("Traceback"),
        "stderr_tail": stderr[-1000:],
        "web_requests": len(poller.statuses),
        "web_statuses": sorted(set(poller.statuses)),
        "web_errors": poller.errors[:5],
        "web_slowest_seconds": round(max(poller.seconds, default=0.0), 3),
        "sandbox": delta(sandbox.counters(), counters),
        "version_steps": sorted({after[pk] - before[pk] for pk in seeded.ids}),
        "statuses": sorted(set(JiraConnection.objects.values_list("status", flat=True))),
    }


def assert_shared_within_bounds(figures: dict[str, Any]) -> None:
    due, runs = figures["due"], figures["runs"]
    assert figures["exit_codes"] == [0] * runs, figures["stderr_tail"]
    assert (figures["too_many_clients"], figures["tracebacks"]) == (0, 0), figures["stderr_tail"]
    # Exactly once: one token call and one version step per connection, no reuse.
    assert figures["sandbox"] == {
        "refreshes": due,
        "token_requests": due,
        "reuse_detections": 0,
        "leeway_reuses": 0,
        "grants_revoked": 0,
        "faults_injected": 0,
    }
    assert figures["version_steps"] == [1]
    assert figures["statuses"] == [ConnectionStatus.ACTIVE]
    assert sum(figures["refreshed_per_run"]) == sum(figures["claimed_per_run"]) == due
    assert figures["transient_failures"] == 0
    assert figures["wasted_claims"] < WASTE_LIMIT * due
    # The runs really overlapped: the due set was split, not walked by each.
    assert sum(1 for n in figures["refreshed_per_run"] if n) > 1
    # Each run stays within its pool however many workers it has; the sampler saw them.
    assert 0 < figures["peak_connections_per_run"] <= figures["pool_max_size"] < figures["concurrency"]
    # The web tier answered throughout, every time.
    assert figures["web_requests"] > 0
    assert (figures["web_statuses"], figures["web_errors"]) == ([200], [])


@pytest.mark.parametrize(
    ("runs", "connections"),
    # The fast version runs in make test on PostgreSQL; the full one in make proof.
    [(4, 200), pytest.param(8, 1000, marks=pytest.mark.slow)],
    ids=["4-runs", "8-runs"],
)
def test_overlapping_runs_at_the_default_settings_share_the_due_set_within_their_pools(
    start_sandbox: StartSandbox, logs: Path, runs: int, connections: int
) -> None:
    sandbox = start_sandbox(leeway=0)
    sandbox.faults({"token": {"latency_ms": TOKEN_LATENCY_MS}})
    seeded = seed_connections(sandbox, connections)

    figures = overlapping_runs(sandbox, seeded, logs, runs=runs)

    assert_shared_within_bounds(figures)
    record(f"scale-{runs}-runs", figures)
