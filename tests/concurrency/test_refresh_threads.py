"""Eight threads refresh the same 20 due connections at once, against a strict token server.

With the single-flight claim each connection is refreshed exactly once and every grant
survives; with the claim switched off (the control) the same race reuses spent refresh
tokens and kills grants, so this test is able to fail.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.core import mail
from django.db import connections as db_connections

from integrations.lifecycle.refresh import RefreshOutcome, connection_refresh_for_access, connection_refresh_if_due
from integrations.models import ConnectionStatus, JiraConnection
from tests.concurrency.strict import StrictTokenServer
from tests.support.unsafe import claim_switched_off

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 8


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


def test_racing_threads_refresh_each_connection_exactly_once(
    strict_server: StrictTokenServer, due_connections: list[JiraConnection]
) -> None:
    ids = [c.pk for c in due_connections]
    accounts = {c.account_id for c in due_connections}

    outcomes = race(ids)

    assert outcomes[RefreshOutcome.REFRESHED] == len(ids)
    assert outcomes[RefreshOutcome.NEEDS_RECONNECT] == 0
    assert outcomes[RefreshOutcome.TRANSIENT_FAILURE] == 0
    assert sum(outcomes.values()) == THREADS * len(ids)
    assert strict_server.refreshes_by_account() == dict.fromkeys(accounts, 1)
    counters = strict_server.counters()
    assert (counters["reuse_detections"], counters["grants_revoked"]) == (0, 0)
    # Exactly one refresh request per connection reached the token endpoint.
    assert counters["requests"]["token"] == len(ids)
    rows = JiraConnection.objects.filter(pk__in=ids)
    assert {(r.status, r.version, r.claim_id) for r in rows} == {(ConnectionStatus.ACTIVE, 2, None)}

    # Every grant is alive: the next cycle refreshes each once more, on the stored token.
    assert next_cycle(ids) == Counter({RefreshOutcome.REFRESHED: len(ids)})
    assert strict_server.refreshes_by_account() == dict.fromkeys(accounts, 2)
    assert not mail.outbox


def test_control_without_the_claim_the_same_race_reuses_tokens_and_loses_connections(
    strict_server: StrictTokenServer, due_connections: list[JiraConnection]
) -> None:
    ids = [c.pk for c in due_connections]

    with claim_switched_off():
        race(ids)
        after = next_cycle(ids)

    counters = strict_server.counters()
    assert counters["reuse_detections"] > 0
    assert counters["grants_revoked"] > 0
    assert counters["requests"]["token"] > 2 * len(ids)
    assert after[RefreshOutcome.NEEDS_RECONNECT] > 0
    assert JiraConnection.objects.filter(status=ConnectionStatus.NEEDS_RECONNECT).count() > 0
