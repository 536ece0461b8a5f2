"""A failing token endpoint, and a misconfigured portal, against refresh_tokens processes.

Transient faults (5xx, 429, timeouts, garbled or lost replies) must only delay a
refresh: a few reruns later every connection is refreshed once and none was wrongly
sent to "needs reconnect". Refused client credentials are the portal's fault, not the
users': the run stops with exit status 2 and a clear message, and no row changes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from integrations.models import ConnectionEvent, ConnectionStatus
from tests.proof.conftest import StartSandbox
from tests.proof.harness import (
    SecretScanner,
    delta,
    log_texts,
    raw_rows,
    record,
    refresh_tokens,
    seed_connections,
    status_counts,
    versions,
)

pytestmark = pytest.mark.django_db(transaction=True)

FAULT_KINDS = ["500", "503", "429", "timeout", "malformed", "lost_response"]
MAX_RERUNS = 5


@pytest.mark.slow
def test_thirty_percent_token_faults_heal_within_five_reruns(start_sandbox: StartSandbox, logs: Path) -> None:
    # Atlassian's own 10-minute leeway: a lost reply is retried with the same token.
    sandbox = start_sandbox(leeway=600)
    seeded = seed_connections(sandbox, 200)
    before = versions(seeded.ids)
    sandbox.faults(
        {
            "seed": 30,
            "token": {"rate": 0.3, "kinds": FAULT_KINDS, "retry_after": 1, "hang_seconds": 3},
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

    moved = delta(sandbox.counters(), counters)
    after = versions(seeded.ids)
    assert runs[-1]["exit"] == 0, runs
    assert all(run["exit"] in (0, 1) for run in runs), runs
    assert status_counts(seeded.ids) == {ConnectionStatus.ACTIVE: 200}
    assert Counter(after[pk] - before[pk] for pk in seeded.ids) == {1: 200}
    assert (moved["reuse_detections"], moved["grants_revoked"]) == (0, 0)
    # The faults did happen, and lost replies were recovered through the leeway.
    assert moved["faults_injected"] > 0
    assert runs[0]["transient_failures"] > 0
    scanned = SecretScanner(sandbox.secrets()).assert_clean({**log_texts(logs), "database": raw_rows()})
    record(
        "faults-30-percent",
        {"connections": 200, "runs": runs, "reruns_needed": len(runs) - 1, "sandbox": moved, "scan": scanned},
    )


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
    SecretScanner(sandbox.secrets()).assert_clean({**log_texts(logs), "database": raw_rows()})
