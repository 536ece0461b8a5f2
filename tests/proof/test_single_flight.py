"""Refresh is single-flight across threads, OS processes and on-demand API calls.

One scenario at two scales. Against a strict sandbox process (leeway 0: any reuse of a
spent refresh token revokes the whole grant, as Atlassian does after its 10 minutes),
racers start at once on the same due connections: threads of this process, or
`manage.py refresh_tokens` processes (as on N hosts) while threads of this process ask
for access tokens or call Jira's /myself. Each cycle must refresh every connection
exactly once: the sandbox counts one refresh per grant (one account is one refresh-token
lineage), every row's version moves by one, nothing is reused, nothing needs
reconnecting, no claim is left behind. The control runs switch the claim off
(tests/support/unsafe.py) and must lose grants, or the proof could not fail.

- Small scale, in `make test` on SQLite and PostgreSQL: 8 threads on 20 connections and
  its control; 4 processes released together on 20 connections; 2 processes and 10 API
  calls on 50 connections; and a check that the full-scale control's launcher really
  runs refresh_tokens without the claim.
- Full scale, in `make proof` (`-m slow`, PostgreSQL): 2, 8 and 32 processes with 50 API
  calls on 1,000 connections, two cycles each, and the control with 8 processes.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core import mail
from django.db import connection as db_connection
from django.db import connections as db_connections
from django.utils import timezone

from integrations.lifecycle.refresh import RefreshOutcome, connection_refresh_for_access, connection_refresh_if_due
from integrations.models import ConnectionStatus, JiraConnection
from sandbox.testing import SandboxClient
from tests.proof.harness import (
    Seeded,
    StartSandbox,
    api_burst,
    assert_no_secret_leaked,
    delta,
    make_due,
    needs_reconnect,
    record,
    seed_connections,
    status_counts,
    stopwatch,
    versions,
    wait_for_connection_slots,
)
from tests.support.processes import RefreshProcess, release_together
from tests.support.unsafe import claim_switched_off

pytestmark = pytest.mark.django_db(transaction=True)

# Small scale.
SMALL = 20
THREADS = 8
# Full scale.
CONNECTIONS = 1000
API_CALLS = 50
# As over a real network: a second refresher can read the same refresh token before the
# first one has stored the new one.
TOKEN_LATENCY_MS = 50
# Worker threads per process. PostgreSQL allows 100 connections here: 32 workers plus
# 50 API threads plus this process stay under it, whatever the split into processes.
WORKERS = {2: 8, 8: 3, 32: 1}


def strict_sandbox(start_sandbox: StartSandbox, *, latency_ms: int) -> SandboxClient:
    """A sandbox process with leeway 0, each refresh taking `latency_ms`."""
    sandbox = start_sandbox(leeway=0)
    sandbox.faults({"token": {"latency_ms": latency_ms}})
    return sandbox


# --- Racing threads ---------------------------------------------------------------------------


def race(ids: list[int], *, threads: int = THREADS) -> Counter[RefreshOutcome]:
    """Every thread refreshes every connection, all starting at the same instant."""
    start = threading.Barrier(threads)
    outcomes: Counter[RefreshOutcome] = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            start.wait()
            for pk in ids:
                outcome = connection_refresh_if_due(connection_id=pk).outcome
                with lock:
                    outcomes[outcome] += 1
        except BaseException as exc:  # reported by the main thread below
            errors.append(exc)
        finally:
            db_connections.close_all()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=60)
    assert not errors, errors
    return outcomes


def next_cycle(ids: list[int]) -> Counter[RefreshOutcome]:
    """One orderly refresh of each connection: does its grant still live?"""
    return Counter(connection_refresh_for_access(connection_id=pk, rejected=True).outcome for pk in ids)


def test_racing_threads_refresh_each_connection_exactly_once(start_sandbox: StartSandbox) -> None:
    sandbox = strict_sandbox(start_sandbox, latency_ms=30)
    seeded = seed_connections(sandbox, SMALL)
    ids = seeded.ids
    accounts = set(seeded.account_of.values())

    outcomes = race(ids)

    assert outcomes[RefreshOutcome.REFRESHED] == len(ids)
    assert outcomes[RefreshOutcome.NEEDS_RECONNECT] == 0
    assert outcomes[RefreshOutcome.TRANSIENT_FAILURE] == 0
    assert sum(outcomes.values()) == THREADS * len(ids)
    assert sandbox.refreshes_by_account() == dict.fromkeys(accounts, 1)
    counters = sandbox.counters()
    assert (counters["reuse_detections"], counters["grants_revoked"]) == (0, 0)
    # Exactly one refresh request per connection reached the token endpoint.
    assert counters["requests"]["token"] == len(ids)
    rows = JiraConnection.objects.filter(pk__in=ids)
    assert {(r.status, r.version, r.claim_id) for r in rows} == {(ConnectionStatus.ACTIVE, 2, None)}

    # Every grant is alive: the next cycle refreshes each once more, on the stored token.
    assert next_cycle(ids) == Counter({RefreshOutcome.REFRESHED: len(ids)})
    assert sandbox.refreshes_by_account() == dict.fromkeys(accounts, 2)
    assert not mail.outbox


def test_control_without_the_claim_racing_threads_reuse_tokens_and_lose_connections(
    start_sandbox: StartSandbox,
) -> None:
    sandbox = strict_sandbox(start_sandbox, latency_ms=30)
    ids = seed_connections(sandbox, SMALL).ids

    with claim_switched_off():
        race(ids)
        after = next_cycle(ids)

    counters = sandbox.counters()
    assert counters["reuse_detections"] > 0
    assert counters["grants_revoked"] > 0
    assert counters["requests"]["token"] > 2 * len(ids)
    assert after[RefreshOutcome.NEEDS_RECONNECT] > 0
    assert JiraConnection.objects.filter(status=ConnectionStatus.NEEDS_RECONNECT).count() > 0


# --- refresh_tokens processes and API calls ---------------------------------------------------


def refresh_cycle(
    sandbox: SandboxClient,
    seeded: Seeded,
    logs: Path,
    *,
    label: str,
    processes: int,
    concurrency: int,
    api_calls: int,
    rng: random.Random,
    gated: bool = False,
    unsafe: bool = False,
) -> dict[str, Any]:
    """Expire every access token, then run the refreshers and the API burst together.

    `gated`: the processes set Django up first and are released together."""
    make_due(seeded.ids)
    before = versions(seeded.ids)
    counters = sandbox.counters()
    per_account = sandbox.refreshes_by_account()
    # Each process: one connection per worker, plus its main thread's when it has workers.
    wait_for_connection_slots(processes * (concurrency + (concurrency > 1)) + api_calls)
    with stopwatch() as timing:
        runs = [
            RefreshProcess(
                sandbox.base_url, logs, f"{label}-p{n}", "--concurrency", str(concurrency), gated=gated, unsafe=unsafe
            )
            for n in range(processes)
        ]
        if gated:
            release_together(runs)
        if api_calls:
            sandbox.wait_for_token_requests(counters["requests"]["token"])
        burst = api_burst(seeded, calls=api_calls, rng=rng).join()
        results = [run.wait() for run in runs]
    after = versions(seeded.ids)
    per_account_after = sandbox.refreshes_by_account()
    summaries = [r.summary for r in results]
    return {
        "label": label,
        "processes": processes,
        "concurrency": concurrency,
        "api_calls": api_calls,
        "seconds": timing["seconds"],
        "exit_codes": dict(Counter(r.returncode for r in results)),
        "stderr_tails": [r.stderr[-500:] for r in results if r.returncode != 0][:3],
        "by_processes": {
            key: sum(s[key] for s in summaries)
            for key in ("due", "refreshed", "not_due", "claimed_elsewhere", "needs_reconnect", "transient_failures")
        },
        "wasted_claims": sum(s.get("wasted_claims", 0) for s in summaries),
        "refreshed_per_process": [s["refreshed"] for s in summaries],
        "api_ok": burst.ok,
        "api_errors": len(burst.errors),
        "api_error_samples": burst.errors[:5],
        "sandbox": delta(sandbox.counters(), counters),
        "version_steps": dict(Counter(after[pk] - before[pk] for pk in seeded.ids)),
        "refreshes_per_grant": dict(
            Counter(
                per_account_after.get(account, 0) - per_account.get(account, 0)
                for account in seeded.account_of.values()
            )
        ),
        "statuses": status_counts(seeded.ids),
        "claims_left": JiraConnection.objects.filter(pk__in=seeded.ids, claim_id__isnull=False).count(),
    }


def assert_exactly_once(cycle: dict[str, Any], *, connections: int) -> None:
    assert cycle["exit_codes"] == {0: cycle["processes"]}, cycle["stderr_tails"]
    assert (cycle["api_ok"], cycle["api_error_samples"]) == (cycle["api_calls"], [])
    assert cycle["sandbox"] == {
        "refreshes": connections,
        "token_requests": connections,
        "reuse_detections": 0,
        "leeway_reuses": 0,
        "grants_revoked": 0,
        "faults_injected": 0,
    }
    assert cycle["refreshes_per_grant"] == {1: connections}
    assert cycle["version_steps"] == {1: connections}
    assert cycle["statuses"] == {ConnectionStatus.ACTIVE: connections}
    assert cycle["claims_left"] == 0
    # The processes did the work the API calls left them, and no more.
    assert cycle["by_processes"]["refreshed"] <= connections
    if not cycle["api_calls"]:
        assert cycle["by_processes"]["refreshed"] == connections
    assert cycle["by_processes"]["needs_reconnect"] == cycle["by_processes"]["transient_failures"] == 0


def test_four_processes_released_together_refresh_each_connection_exactly_once(
    start_sandbox: StartSandbox, logs: Path
) -> None:
    """Runs on SQLite (one file shared by the processes, WAL) and on PostgreSQL alike."""
    # Long enough that no process is done before the others have listed their work.
    sandbox = strict_sandbox(start_sandbox, latency_ms=100)
    seeded = seed_connections(sandbox, SMALL)

    cycle = refresh_cycle(
        sandbox, seeded, logs, label="gated", processes=4, concurrency=4, api_calls=0, rng=random.Random(4), gated=True
    )

    assert_exactly_once(cycle, connections=SMALL)
    if db_connection.vendor == "postgresql":
        # Batch claims split the due set: every connection went to one process, untried
        # by the others, and the work was shared.
        assert cycle["by_processes"]["due"] == SMALL
        assert cycle["wasted_claims"] == 0
        assert sum(1 for refreshed in cycle["refreshed_per_process"] if refreshed) > 1
    else:
        # The processes did overlap: some connections were due in more than one of them.
        assert cycle["by_processes"]["due"] > SMALL


def test_the_control_launcher_really_switches_the_claim_off(start_sandbox: StartSandbox, logs: Path) -> None:
    """The full-scale control's processes run through tests/support/unsafe.py: it must
    start refresh_tokens, and that run must take connections another worker holds."""
    sandbox = start_sandbox(leeway=0)
    seeded = seed_connections(sandbox, 2)
    held = JiraConnection.objects.filter(pk__in=seeded.ids)
    held.update(claim_id=uuid.uuid4(), claimed_until=timezone.now() + timedelta(minutes=2))

    claim_on = RefreshProcess(sandbox.base_url, logs, "claim-on").wait()
    claim_off = RefreshProcess(sandbox.base_url, logs, "claim-off", unsafe=True).wait()

    assert (claim_on.returncode, claim_on.summary["refreshed"]) == (0, 0), claim_on.stderr[-2000:]
    # It took both held connections: each grant was refreshed. (On PostgreSQL its batch
    # claims, blind to leases, even take them again within the run and lose them to token
    # reuse: exactly the double refresh the claim prevents.)
    assert claim_off.returncode in (0, 1), claim_off.stderr[-2000:]
    per_account = sandbox.refreshes_by_account()
    assert all(per_account.get(seeded.account_of[pk], 0) >= 1 for pk in seeded.ids), per_account


def test_two_processes_and_api_calls_refresh_fifty_connections_exactly_once(
    start_sandbox: StartSandbox, logs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 50 refreshes of 100 ms over 4 workers: the batch outlasts the second process's start-up.
    sandbox = strict_sandbox(start_sandbox, latency_ms=100)
    seeded = seed_connections(sandbox, 50)

    cycle = refresh_cycle(
        sandbox, seeded, logs, label="fast", processes=2, concurrency=4, api_calls=10, rng=random.Random(2)
    )

    assert_exactly_once(cycle, connections=50)
    if db_connection.vendor == "postgresql":
        # Batch claims split the due set: both processes got a share of it.
        assert all(refreshed > 0 for refreshed in cycle["refreshed_per_process"])
    else:
        # Both processes found work due: they really overlapped.
        assert cycle["by_processes"]["due"] > 50
    assert_no_secret_leaked(sandbox, logs, caplog=caplog.text)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("processes", [2, 8, 32])
def test_processes_and_api_calls_refresh_each_of_1000_connections_exactly_once_per_cycle(
    start_sandbox: StartSandbox, logs: Path, caplog: pytest.LogCaptureFixture, processes: int
) -> None:
    sandbox = strict_sandbox(start_sandbox, latency_ms=TOKEN_LATENCY_MS)
    seeded = seed_connections(sandbox, CONNECTIONS)
    rng = random.Random(processes)

    cycles = [
        refresh_cycle(
            sandbox,
            seeded,
            logs,
            label=f"{processes}x{WORKERS[processes]}",
            processes=processes,
            concurrency=WORKERS[processes],
            api_calls=API_CALLS,
            rng=rng,
        ),
        # The next hour's cycle, by one process: every stored refresh token must be the
        # live one (a stale one would now be a reuse, and kill its grant).
        refresh_cycle(sandbox, seeded, logs, label="next-cycle", processes=1, concurrency=8, api_calls=0, rng=rng),
    ]

    for cycle in cycles:
        assert_exactly_once(cycle, connections=CONNECTIONS)
    assert set(JiraConnection.objects.values_list("claim_id", flat=True)) == {None}
    scanned = assert_no_secret_leaked(sandbox, logs, caplog=caplog.text)
    record(f"concurrency-{processes}-processes", {"connections": CONNECTIONS, "cycles": cycles, "scan": scanned})


@pytest.mark.slow
@pytest.mark.postgres
def test_control_without_the_claim_processes_reuse_tokens_and_lose_connections(
    start_sandbox: StartSandbox, logs: Path
) -> None:
    """The same run with the claim switched off must fail, or the proof above proves nothing."""
    sandbox = strict_sandbox(start_sandbox, latency_ms=TOKEN_LATENCY_MS)
    seeded = seed_connections(sandbox, CONNECTIONS)
    rng = random.Random(8)

    with claim_switched_off():
        control = refresh_cycle(
            sandbox,
            seeded,
            logs,
            label="control",
            processes=8,
            concurrency=3,
            api_calls=API_CALLS,
            rng=rng,
            unsafe=True,
        )
    # The next cycle, with the claim back on, finds out which grants the control killed.
    after = refresh_cycle(
        sandbox, seeded, logs, label="after-control", processes=2, concurrency=8, api_calls=0, rng=rng
    )

    lost = needs_reconnect(seeded.ids)
    revoked = {g["account_id"] for g in sandbox.grants() if g["revoked_reason"] == "reuse_detected"}
    assert control["sandbox"]["reuse_detections"] > 0
    # More refresh requests than connections: some token was sent twice.
    assert control["sandbox"]["token_requests"] > CONNECTIONS
    assert len(lost) > 0
    # Every connection lost is one whose grant the reuse killed, and vice versa.
    assert {seeded.account_of[pk] for pk in lost} == revoked
    record(
        "concurrency-control-no-claim",
        {"connections": CONNECTIONS, "control": control, "after": after, "lost": len(lost), "revoked": len(revoked)},
    )
