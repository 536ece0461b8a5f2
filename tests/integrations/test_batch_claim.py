"""The batch claim (PostgreSQL) and the database connection handed back around the
Atlassian call (both databases)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import responses
from django.db import connection as db_connection
from django.db import connections, transaction

from accounts.models import User
from integrations.lifecycle.due import DEFAULT_RULE
from integrations.lifecycle.refresh import (
    CLAIM_LEASE,
    BatchClaimer,
    ClaimedRow,
    RefreshOutcome,
    connection_refresh_claimed,
    connection_refresh_if_due,
)
from integrations.models import ConnectionStatus, JiraConnection
from tests.support.atlassian import TOKEN_URL, token_reply
from tests.support.clock import FakeClock, install_clock
from tests.support.connections import ConnectionFactory, fresh

WARM_BRANCH = 0


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    return install_clock(monkeypatch)


def claim_due(*, branch: int, size: int, claim: uuid.UUID, **options: Any) -> list[ClaimedRow]:
    """One batch claim, as a run's BatchClaimer makes it."""
    return BatchClaimer(rule=DEFAULT_RULE, **options).claim(branch=branch, size=size, claim=claim)


def claim(size: int, *, branch: int = WARM_BRANCH, **options: Any) -> tuple[uuid.UUID, list[int]]:
    claim_id = uuid.uuid4()
    rows = claim_due(branch=branch, size=size, claim=claim_id, **options)
    return claim_id, [row.connection_id for row in rows]


def due(make_connection: ConnectionFactory, user: User, frozen: FakeClock, count: int, **values: Any) -> list[int]:
    expires = frozen.now() - timedelta(minutes=1)
    return [make_connection(user, access_token_expires_at=expires, **values).pk for _ in range(count)]


@pytest.mark.postgres
@pytest.mark.django_db
class TestClaimDue:
    def test_claims_at_most_size_rows_soonest_expiry_first_and_leases_them(
        self, alice: User, make_connection: ConnectionFactory, frozen: FakeClock
    ) -> None:
        ids = [
            make_connection(alice, access_token_expires_at=frozen.now() - timedelta(minutes=minutes)).pk
            for minutes in (1, 30, 10)
        ]

        claim_id, claimed = claim(2)

        # The two that expired first (RETURNING gives no order: compare as sets).
        assert set(claimed) == {ids[1], ids[2]}
        rows = JiraConnection.objects.filter(pk__in=claimed).values_list("claim_id", "claimed_until")
        assert set(rows) == {(claim_id, frozen.now() + CLAIM_LEASE)}
        assert fresh(JiraConnection(pk=ids[0])).claim_id is None

    def test_a_row_with_a_live_lease_is_skipped_and_a_lapsed_one_taken(
        self, alice: User, make_connection: ConnectionFactory, frozen: FakeClock
    ) -> None:
        live = due(make_connection, alice, frozen, 1, claim_id=uuid.uuid4(), claimed_until=frozen.now())
        lapsed = due(
            make_connection, alice, frozen, 1, claim_id=uuid.uuid4(), claimed_until=frozen.now() - timedelta(seconds=1)
        )

        assert claim(10)[1] == lapsed
        assert live[0] not in claim(10)[1]

    def test_a_row_in_backoff_is_skipped_unless_the_run_ignores_backoff(
        self, alice: User, make_connection: ConnectionFactory, frozen: FakeClock
    ) -> None:
        backing_off = due(
            make_connection,
            alice,
            frozen,
            1,
            status=ConnectionStatus.REFRESH_FAILING,
            next_attempt_at=frozen.now() + timedelta(minutes=5),
        )

        assert claim(10)[1] == []
        assert claim(10, ignore_backoff=True)[1] == backing_off

    def test_needs_reconnect_not_due_and_other_users_rows_are_never_claimed(
        self, alice: User, bob: User, make_connection: ConnectionFactory, frozen: FakeClock
    ) -> None:
        due(make_connection, alice, frozen, 1, status=ConnectionStatus.NEEDS_RECONNECT)
        make_connection(alice, access_token_expires_at=frozen.now() + timedelta(hours=1))
        bobs = due(make_connection, bob, frozen, 1)
        alices = due(make_connection, alice, frozen, 1)

        assert claim(10, user_email=" BOB@example.com ")[1] == bobs
        assert claim(10)[1] == alices

    def test_each_due_branch_is_claimed_by_its_own_statement(
        self, alice: User, make_connection: ConnectionFactory, frozen: FakeClock
    ) -> None:
        failing = make_connection(
            alice,
            access_token_expires_at=frozen.now() + timedelta(hours=1),
            status=ConnectionStatus.REFRESH_FAILING,
            next_attempt_at=frozen.now() - timedelta(minutes=1),
        ).pk
        idle = make_connection(
            alice,
            access_token_expires_at=frozen.now() + timedelta(hours=1),
            tokens_issued_at=frozen.now() - timedelta(days=31),
        ).pk
        branches = len(DEFAULT_RULE.branches(now=frozen.now()))

        claimed = [claim(10, branch=branch)[1] for branch in range(branches)]

        assert sorted(pk for ids in claimed for pk in ids) == sorted([failing, idle])
        assert all(len(ids) <= 1 for ids in claimed)

    def test_a_claimed_row_is_refreshed_without_a_second_claim_and_released_by_the_store(
        self,
        alice: User,
        make_connection: ConnectionFactory,
        frozen: FakeClock,
        mocked: responses.RequestsMock,
    ) -> None:
        (pk,) = due(make_connection, alice, frozen, 1)
        claim_id = uuid.uuid4()
        (claimed,) = claim_due(branch=WARM_BRANCH, size=1, claim=claim_id)
        mocked.post(TOKEN_URL, json=token_reply(1))

        result = connection_refresh_claimed(row=claimed, claim=claim_id)

        row = JiraConnection.objects.get(pk=pk)
        assert (claimed.connection_id, result.outcome) == (pk, RefreshOutcome.REFRESHED)
        assert (row.version, row.claim_id, row.claimed_until, row.access_token) == (
            2,
            None,
            None,
            "new-access-1-secret",
        )

    def test_a_claimer_reused_across_claims_takes_what_has_become_due_since(
        self, alice: User, make_connection: ConnectionFactory, frozen: FakeClock
    ) -> None:
        later = make_connection(alice, access_token_expires_at=frozen.now() + timedelta(hours=1)).pk
        claimer = BatchClaimer(rule=DEFAULT_RULE)

        first = claimer.claim(branch=WARM_BRANCH, size=10, claim=uuid.uuid4())
        frozen.advance(hours=1)
        second = claimer.claim(branch=WARM_BRANCH, size=10, claim=uuid.uuid4())

        assert ([row.connection_id for row in first], [row.connection_id for row in second]) == ([], [later])


@pytest.fixture
def threads_close_connections() -> Iterator[list[threading.Thread]]:
    started: list[threading.Thread] = []
    yield started
    for thread in started:
        thread.join(30)
    assert not any(thread.is_alive() for thread in started)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_claimers_never_get_the_same_row(
    alice: User,
    make_connection: ConnectionFactory,
    frozen: FakeClock,
    threads_close_connections: list[threading.Thread],
) -> None:
    ids = set(due(make_connection, alice, frozen, 200))
    start = threading.Barrier(2)
    taken: list[list[int]] = [[], []]

    def claimer(n: int) -> None:
        try:
            start.wait(10)
            while batch := claim_due(branch=WARM_BRANCH, size=7, claim=uuid.uuid4()):
                taken[n] += [row.connection_id for row in batch]
        finally:
            connections.close_all()

    for n in range(2):
        thread = threading.Thread(target=claimer, args=(n,))
        threads_close_connections.append(thread)
        thread.start()
    for thread in threads_close_connections:
        thread.join(60)

    assert not set(taken[0]) & set(taken[1])
    assert sorted(taken[0] + taken[1]) == sorted(ids)
    # Both claimers got work: they really ran side by side.
    assert [len(batch) > 0 for batch in taken] == [True, True]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_row_locked_by_another_transaction_is_skipped_without_waiting(
    alice: User,
    make_connection: ConnectionFactory,
    frozen: FakeClock,
    threads_close_connections: list[threading.Thread],
) -> None:
    locked, free = due(make_connection, alice, frozen, 2)
    claimed: list[int] = []

    def other_claimer() -> None:
        try:
            rows = claim_due(branch=WARM_BRANCH, size=10, claim=uuid.uuid4())
            claimed.extend(row.connection_id for row in rows)
        finally:
            connections.close_all()

    with transaction.atomic():
        # Another run's claim statement (or a store) holding the row's lock right now.
        list(JiraConnection.objects.select_for_update().filter(pk=locked).values_list("pk"))
        thread = threading.Thread(target=other_claimer)
        threads_close_connections.append(thread)
        thread.start()
        thread.join(10)
        assert not thread.is_alive(), "the claim waited for the lock instead of skipping the row"

    assert claimed == [free]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_claim_reads_the_rows_so_their_refresh_sends_only_the_store(
    alice: User,
    make_connection: ConnectionFactory,
    frozen: FakeClock,
    mocked: responses.RequestsMock,
) -> None:
    connection = make_connection(alice, access_token_expires_at=frozen.now() - timedelta(minutes=1))
    claim_id = uuid.uuid4()
    (claimed,) = claim_due(branch=WARM_BRANCH, size=1, claim=claim_id)
    held: list[bool] = []

    def token_endpoint(request: Any) -> tuple[int, dict[str, str], str]:
        held.append(db_connection.connection is not None)
        return 200, {}, json.dumps(token_reply(1))

    mocked.add_callback(responses.POST, TOKEN_URL, callback=token_endpoint)

    sent: list[str] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        # Unlike CaptureQueriesContext, opens no connection of its own.
        sent.append(sql.split(None, 1)[0])
        return execute(sql, params, many, context)

    with db_connection.execute_wrapper(record):
        result = connection_refresh_claimed(row=claimed, claim=claim_id)

    assert (claimed.refresh_token, claimed.version) == (connection.refresh_token, connection.version)
    assert connection.refresh_token not in repr(claimed)
    assert (result.outcome, held) == (RefreshOutcome.REFRESHED, [False])
    assert sent == ["UPDATE"]
    assert fresh(connection).refresh_token == "new-refresh-1-secret"


@pytest.mark.django_db(transaction=True)
def test_no_database_connection_is_held_while_atlassian_answers(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    (pk,) = due(make_connection, alice, frozen, 1)
    held: list[bool] = []

    def token_endpoint(request: Any) -> tuple[int, dict[str, str], str]:
        held.append(db_connection.connection is not None)
        return 200, {}, json.dumps(token_reply(1))

    mocked.add_callback(responses.POST, TOKEN_URL, callback=token_endpoint)

    result = connection_refresh_if_due(connection_id=pk)

    assert (result.outcome, held) == (RefreshOutcome.REFRESHED, [False])
    # Handed back after the store too: a worker waiting for its next row holds nothing.
    assert db_connection.connection is None
    assert fresh(JiraConnection(pk=pk)).version == 2
