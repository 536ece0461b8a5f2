"""A failing token endpoint, and a misconfigured portal, against refresh_tokens processes.

Transient faults (5xx, 429, timeouts, garbled or lost replies) must only delay a
refresh: a few reruns later every connection is refreshed once and none was wrongly
sent to "needs reconnect". Refused client credentials are the portal's fault, not the
users': the run stops with exit status 2 and a clear message, and no row changes.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from integrations.models import ConnectionEvent, ConnectionStatus, EventKind, JiraConnection
from tests.proof.harness import (
    StartSandbox,
    assert_no_secret_leaked,
    delta,
    faults_by_kind,
    record,
    refresh_tokens,
    seed_connections,
    status_counts,
    versions,
)
from tests.support.secrets import raw_rows

pytestmark = pytest.mark.django_db(transaction=True)

FAULT_KINDS = ["500", "503", "429", "timeout", "malformed", "lost_response"]
MAX_RERUNS = 5
# Far from a first failure's own backoff (60 s x 0.7-1.3), so a next attempt set from
# the backoff instead of from Retry-After cannot pass for it.
RETRY_AFTER = 20


def rate_limited_waits(ids: list[int]) -> list[float]:
    """For every refresh that failed on a 429: seconds from the failure to its next attempt."""
    events = ConnectionEvent.objects.filter(connection_id__in=ids, kind=EventKind.REFRESH_FAILED, detail__status=429)
    return [
        (datetime.fromisoformat(event.detail["retry_at"]) - event.created_at).total_seconds()
        for event in events.only("detail", "created_at")
    ]


@pytest.mark.slow
def test_thirty_percent_token_faults_heal_within_five_reruns(start_sandbox: StartSandbox, logs: Path) -> None:
    # Atlassian's own 10-minute leeway: a lost reply is retried with the same token.
    sandbox = start_sandbox(leeway=600)
    seeded = seed_connections(sandbox, 200)
    before = versions(seeded.ids)
    sandbox.faults(
        {
            "seed": 30,
            "token": {"rate": 0.3, "kinds": FAULT_KINDS, "retry_after": RETRY_AFTER, "hang_seconds": 3},
        }
    )
    counters = sandbox.counters()

    runs = []
    for attempt in range(1 + MAX_RERUNS):
        # Read timeout 2 s < the 3 s hang: "timeout" faults really time out. Backoff is
        # real time, so reruns ignore it (as an operator retrying by hand would).
        run = refresh_tokens(
            sandbox, logs, f"run{attempt}", "--ignore-backoff", "--concurrency", "8", ATLASSIAN_READ_TIMEOUT="2"
        )
        runs.append({"exit": run.returncode, **run.summary})
        if run.returncode == 0:
            break

    final = sandbox.counters()
    moved, by_kind = delta(final, counters), faults_by_kind(final, counters)
    after = versions(seeded.ids)
    assert runs[-1]["exit"] == 0, runs
    assert all(run["exit"] in (0, 1) for run in runs), runs
    assert status_counts(seeded.ids) == {ConnectionStatus.ACTIVE: 200}
    assert Counter(after[pk] - before[pk] for pk in seeded.ids) == {1: 200}
    assert (moved["reuse_detections"], moved["grants_revoked"]) == (0, 0)
    # Every kind of fault did happen, and lost replies were recovered through the leeway.
    assert sorted(kind for kind, count in by_kind.items() if count) == sorted(FAULT_KINDS), by_kind
    assert sum(by_kind.values()) == moved["faults_injected"]
    assert runs[0]["transient_failures"] > 0
    # A 429 put its connection's next attempt Retry-After seconds after the failure (the
    # failure's clock starts before the request, so the wait seen from its event is a
    # little shorter), not at the exponential backoff.
    waits = rate_limited_waits(seeded.ids)
    assert waits
    assert all(RETRY_AFTER - 10 < wait <= RETRY_AFTER for wait in waits), sorted(waits)
    scanned = assert_no_secret_leaked(sandbox, logs)
    record(
        "faults-30-percent",
        {
            "connections": 200,
            "runs": runs,
            "reruns_needed": len(runs) - 1,
            "sandbox": moved,
            "faults_by_kind": by_kind,
            "rate_limited": {
                "failures": len(waits),
                "retry_after": RETRY_AFTER,
                "next_attempt_after_seconds": [round(min(waits), 3), round(max(waits), 3)],
            },
            "scan": scanned,
        },
    )


def test_429_retry_after_sets_next_attempt_and_runs_wait_for_it(start_sandbox: StartSandbox, logs: Path) -> None:
    sandbox = start_sandbox(leeway=600)
    seeded = seed_connections(sandbox, 3)
    stored = {c.pk: c.refresh_token for c in JiraConnection.objects.filter(pk__in=seeded.ids)}
    before = versions(seeded.ids)
    sandbox.faults({"token": {"kinds": ["429"], "retry_after": RETRY_AFTER}})
    counters = sandbox.counters()

    started = timezone.now()
    run = refresh_tokens(sandbox, logs, "rate-limited", "--concurrency", "3")
    finished = timezone.now()

    assert run.returncode == 1
    assert (run.summary["transient_failures"], run.summary["refreshed"]) == (3, 0)
    final = sandbox.counters()
    # One token call each, no retry inside the run, and all three answered 429.
    assert delta(final, counters)["token_requests"] == 3
    assert faults_by_kind(final, counters)["429"] == 3
    retry_from, retry_to = started + timedelta(seconds=RETRY_AFTER), finished + timedelta(seconds=RETRY_AFTER)
    for connection in JiraConnection.objects.filter(pk__in=seeded.ids):
        assert connection.status == ConnectionStatus.REFRESH_FAILING
        assert connection.failure_count == 1
        assert connection.next_attempt_at is not None
        assert retry_from <= connection.next_attempt_at <= retry_to
        assert connection.refresh_token == stored[connection.pk]
    assert versions(seeded.ids) == before

    # Atlassian has recovered, but Retry-After has not passed: a run (without
    # --ignore-backoff) leaves the connections alone and sends Atlassian nothing.
    sandbox.faults({})
    counters = sandbox.counters()
    run = refresh_tokens(sandbox, logs, "before-retry-after")
    assert (run.returncode, run.summary["due"]) == (0, 0)
    assert delta(sandbox.counters(), counters)["token_requests"] == 0
    assert status_counts(seeded.ids) == {ConnectionStatus.REFRESH_FAILING: 3}

    # Once the next attempt is due, the next run refreshes them.
    JiraConnection.objects.filter(pk__in=seeded.ids).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    run = refresh_tokens(sandbox, logs, "after-retry-after")
    assert (run.returncode, run.summary["refreshed"]) == (0, 3)
    assert delta(sandbox.counters(), counters)["token_requests"] == 3
    for connection in JiraConnection.objects.filter(pk__in=seeded.ids):
        assert connection.status == ConnectionStatus.ACTIVE
        assert connection.next_attempt_at is None
        assert connection.refresh_token != stored[connection.pk]
    assert_no_secret_leaked(sandbox, logs)


def test_refused_client_secret_exits_2_and_changes_no_connection(start_sandbox: StartSandbox, logs: Path) -> None:
    sandbox = start_sandbox(leeway=600)
    seed_connections(sandbox, 20)
    # Atlassian no longer accepts the secret the portal sends (rotated in the console).
    sandbox.configure(client_secret="rotated-in-the-developer-console")
    rows_before = raw_rows()
    events_before = ConnectionEvent.objects.count()

    run = refresh_tokens(sandbox, logs, "wrong-secret", "--concurrency", "4")

    assert run.returncode == 2
    assert "Configuration error: Atlassian refused this portal's client credentials" in run.stderr
    assert "ATLASSIAN_CLIENT_SECRET" in run.stderr
    assert run.summary["configuration_error"]
    assert run.summary["refreshed"] == run.summary["needs_reconnect"] == 0
    # Byte for byte: tokens, versions, statuses, claims, timestamps.
    assert raw_rows() == rows_before
    assert ConnectionEvent.objects.count() == events_before
    assert sandbox.counters()["refreshes"] == 0
    assert_no_secret_leaked(sandbox, logs)
