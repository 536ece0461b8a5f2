"""Refresh is single-flight across OS processes and on-demand API calls.

Against a strict sandbox (leeway 0: any reuse of a spent refresh token revokes the grant),
N `manage.py refresh_tokens` processes start at once on the same due connections, as if
on N hosts, while 50 threads of this process ask for access tokens or call Jira's
/myself on random connections. Each cycle must refresh every connection exactly once:
the sandbox counts one refresh per grant, every row's version moves by one, nothing is
reused and nothing needs reconnecting. The control run switches the claim off and must
lose grants, or the proof could not fail.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from integrations.models import ConnectionStatus, JiraConnection
from tests.conftest import is_postgres
from tests.proof.conftest import StartSandbox
from tests.proof.harness import (
    RefreshProcess,
    SandboxProcess,
    SecretScanner,
    Seeded,
    api_burst,
    delta,
    log_texts,
    make_due,
    needs_reconnect,
    raw_rows,
    record,
    seed_connections,
    status_counts,
    stopwatch,
    versions,
    wait_for_connection_slots,
)
from tests.support.unsafe import claim_switched_off

pytestmark = pytest.mark.django_db(transaction=True)

CONNECTIONS = 1000
API_CALLS = 50
# As over a real network: a second refresher can read the same refresh token before the
# first one has stored the new one.
TOKEN_LATENCY_MS = 50
# Worker threads per process. PostgreSQL allows 100 connections here: 32 workers plus
# 50 API threads plus this process stay under it, whatever the split into processes.
WORKERS = {2: 8, 8: 3, 32: 1}


def refresh_cycle(
    sandbox: SandboxProcess,
    seeded: Seeded,
    logs: Path,
    *,
    label: str,
    processes: int,
    concurrency: int,
    api_calls: int,
    rng: random.Random,
    unsafe: bool = False,
) -> dict[str, Any]:
    """Expire every access token, then run the refreshers and the API burst together."""
    make_due(seeded.ids)
    before = versions(seeded.ids)
    counters = sandbox.counters()
    per_account = sandbox.refreshes_by_account()
    # Each process: one connection per worker, plus its main thread's when it has workers.
    wait_for_connection_slots(processes * (concurrency + (concurrency > 1)) + api_calls)
    with stopwatch() as timing:
        runs = [
            RefreshProcess(sandbox, logs, f"{label}-p{n}", "--concurrency", str(concurrency), unsafe=unsafe)
            for n in range(processes)
        ]
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
    # The processes did the work the API calls left them, and no more.
    assert cycle["by_processes"]["refreshed"] <= connections
    assert cycle["by_processes"]["needs_reconnect"] == cycle["by_processes"]["transient_failures"] == 0


def assert_no_secret_leaked(sandbox: SandboxProcess, logs: Path, caplog: pytest.LogCaptureFixture) -> dict[str, int]:
    texts = {**log_texts(logs), "caplog": caplog.text, "database": raw_rows()}
    return SecretScanner(sandbox.secrets()).assert_clean(texts)


def test_two_processes_and_api_calls_refresh_fifty_connections_exactly_once(
    start_sandbox: StartSandbox, logs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The fast version (make test, both databases): 2 processes, 50 connections."""
    sandbox = start_sandbox(leeway=0)
    # 50 refreshes of 100 ms over 4 workers: the batch outlasts the second process's start-up.
    sandbox.faults({"token": {"latency_ms": 100}})
    seeded = seed_connections(sandbox, 50)

    cycle = refresh_cycle(
        sandbox, seeded, logs, label="fast", processes=2, concurrency=4, api_calls=10, rng=random.Random(2)
    )

    assert_exactly_once(cycle, connections=50)
    if is_postgres():
        # Batch claims split the due set: both processes got a share of it.
        assert all(refreshed > 0 for refreshed in cycle["refreshed_per_process"])
    else:
        # Both processes found work due: they really overlapped.
        assert cycle["by_processes"]["due"] > 50
    assert_no_secret_leaked(sandbox, logs, caplog)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("processes", [2, 8, 32])
def test_processes_and_api_calls_refresh_each_of_1000_connections_exactly_once_per_cycle(
    start_sandbox: StartSandbox, logs: Path, caplog: pytest.LogCaptureFixture, processes: int
) -> None:
    sandbox = start_sandbox(leeway=0)
    sandbox.faults({"token": {"latency_ms": TOKEN_LATENCY_MS}})
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
    scanned = assert_no_secret_leaked(sandbox, logs, caplog)
    record(f"concurrency-{processes}-processes", {"connections": CONNECTIONS, "cycles": cycles, "scan": scanned})


@pytest.mark.slow
@pytest.mark.postgres
def test_control_without_the_claim_reuses_tokens_and_loses_connections(start_sandbox: StartSandbox, logs: Path) -> None:
    """The same run with the claim switched off must fail, or the proof above proves nothing."""
    sandbox = start_sandbox(leeway=0)
    sandbox.faults({"token": {"latency_ms": TOKEN_LATENCY_MS}})
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
