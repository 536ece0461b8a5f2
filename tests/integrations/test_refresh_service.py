"""lifecycle.refresh: one connection's refresh, its failure classes and races."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
import requests
import responses
from django.core import mail
from django.db import OperationalError
from django.db import connection as db_connection
from django.db.models import F
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from integrations.lifecycle.config import ConfigurationError
from integrations.lifecycle.refresh import (
    CLAIM_LEASE,
    RefreshOutcome,
    RefreshResult,
    backoff,
    connection_refresh_for_access,
    connection_refresh_if_due,
)
from integrations.lifecycle.status import connection_mark_needs_reconnect
from integrations.models import Actor, ConnectionEvent, ConnectionStatus, EventKind, JiraConnection
from tests.support.atlassian import TOKEN_URL, token_calls, token_reply
from tests.support.clock import FakeClock
from tests.support.connections import OTHER_FERNET_KEY, ConnectionFactory, event_kinds, fresh
from tests.support.secrets import assert_no_secrets
from tests.support.unsafe import claim_switched_off

pytestmark = pytest.mark.django_db


@pytest.fixture
def due(alice: User, make_connection: ConnectionFactory, frozen: FakeClock) -> JiraConnection:
    """A connection whose access token expired a minute ago."""
    return make_connection(
        alice,
        access_token="old-access-secret",
        refresh_token="old-refresh-secret",
        access_token_expires_at=frozen.now() - timedelta(minutes=1),
        tokens_issued_at=frozen.now() - timedelta(hours=1),
    )


def refresh(connection: JiraConnection, *, ignore_backoff: bool = False) -> RefreshResult:
    return connection_refresh_if_due(connection_id=connection.pk, ignore_backoff=ignore_backoff)


def refresh_rejected(connection: JiraConnection) -> RefreshResult:
    """The access path after Jira refused the stored token: unconditional, past any backoff."""
    return connection_refresh_for_access(connection_id=connection.pk, rejected=True)


# --- Success -------------------------------------------------------------------------


def test_due_connection_is_refreshed_and_the_rotated_pair_stored(
    due: JiraConnection, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    mocked.post(TOKEN_URL, json=token_reply(1))

    result = refresh(due)

    assert result.outcome == RefreshOutcome.REFRESHED
    row = fresh(due)
    assert (row.access_token, row.refresh_token) == ("new-access-1-secret", "new-refresh-1-secret")
    assert row.access_token_expires_at == frozen.now() + timedelta(seconds=3600 - 60)
    assert row.version == due.version + 1
    assert row.tokens_issued_at == row.last_refreshed_at == frozen.now()
    assert (row.status, row.failure_count, row.next_attempt_at) == (ConnectionStatus.ACTIVE, 0, None)
    assert (row.claim_id, row.claimed_until) == (None, None)
    # Routine: counted on the row, no audit row (the trail grows with changes, not time).
    assert row.refresh_count == due.refresh_count + 1
    assert not ConnectionEvent.objects.filter(connection=due).exists()


def test_refresh_request_is_sent_with_the_configured_timeout(
    due: JiraConnection, mocked: responses.RequestsMock, settings: Any
) -> None:
    # Not the default: a hard-coded (5, 20) must not pass for reading the setting.
    settings.ATLASSIAN_TIMEOUT = (1.5, 7.5)
    mocked.post(TOKEN_URL, json=token_reply(1))

    assert refresh(due).outcome == RefreshOutcome.REFRESHED

    assert [(call.request.url, call.request.req_kwargs["timeout"]) for call in mocked.calls] == [
        (TOKEN_URL, (1.5, 7.5))
    ]


def test_refresh_request_is_json_with_the_refresh_grant_and_client_credentials(
    due: JiraConnection, mocked: responses.RequestsMock
) -> None:
    mocked.post(TOKEN_URL, json=token_reply(1))

    refresh(due)

    assert len(mocked.calls) == 1
    request = mocked.calls[0].request
    assert request.headers["Content-Type"] == "application/json"
    assert token_calls(mocked) == [
        {
            "grant_type": "refresh_token",
            "client_id": "test-client-id",
            "client_secret": "test-client-secret-do-not-log-a8f3c61e9b2d4075e1c9f0a7b3d5e2c4f6",
            "refresh_token": "old-refresh-secret",
        }
    ]


def test_reply_without_refresh_token_keeps_the_old_one(due: JiraConnection, mocked: responses.RequestsMock) -> None:
    mocked.post(TOKEN_URL, json=token_reply(1, refresh_token=None))

    assert refresh(due).outcome == RefreshOutcome.REFRESHED

    row = fresh(due)
    assert (row.access_token, row.refresh_token) == ("new-access-1-secret", "old-refresh-secret")
    assert fresh(due).refresh_count == due.refresh_count + 1


@pytest.mark.parametrize(
    ("expires_in", "lifetime"),
    [
        (None, 3600),  # missing: Atlassian's documented hour
        ("3600", 3600),
        (" 1800 ", 1800),
        ("soon", 0),  # garbage: treated as already expired
        ("²", 0),  # a Unicode digit int() refuses: must not crash after the rotation
        (-30, 0),
        (0, 0),
        (True, 0),
        (10**12, 24 * 3600),  # clamped
        (1e309, 24 * 3600),
    ],
)
def test_expiry_is_sent_time_plus_expires_in_minus_a_minute(
    due: JiraConnection, mocked: responses.RequestsMock, frozen: FakeClock, expires_in: Any, lifetime: int
) -> None:
    body = token_reply(1, expires_in=expires_in)
    if expires_in == 1e309:
        body["expires_in"] = float("inf")
    mocked.post(TOKEN_URL, json=body)

    assert refresh(due).outcome == RefreshOutcome.REFRESHED

    assert fresh(due).access_token_expires_at == frozen.now() + timedelta(seconds=lifetime) - timedelta(seconds=60)


def test_expiry_counts_from_when_the_request_left(
    due: JiraConnection, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    sent_at = frozen.now()

    def slow_reply(request: Any) -> tuple[int, dict[str, str], str]:
        frozen.advance(seconds=40)
        return 200, {}, json.dumps(token_reply(1))

    mocked.add_callback(responses.POST, TOKEN_URL, callback=slow_reply)

    refresh(due)

    assert fresh(due).access_token_expires_at == sent_at + timedelta(seconds=3600 - 60)


def test_connection_not_due_is_left_alone_without_a_token_call(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    connection = make_connection(alice, access_token_expires_at=frozen.now() + timedelta(minutes=30))

    result = refresh(connection)

    assert result.outcome == RefreshOutcome.NOT_DUE
    assert len(mocked.calls) == 0
    row = fresh(connection)
    assert (row.version, row.claim_id, row.claimed_until) == (connection.version, None, None)


def test_connection_another_run_refreshed_costs_one_unmatched_claim_and_no_write(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    # What an overlapping run meets for every connection the other run already did.
    connection = make_connection(alice, access_token_expires_at=frozen.now() + timedelta(minutes=50))

    with CaptureQueriesContext(db_connection) as queries:
        result = refresh(connection)

    assert result.outcome == RefreshOutcome.NOT_DUE
    assert len(mocked.calls) == 0
    writes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(writes) == 1, writes
    assert fresh(connection).updated_at == connection.updated_at


def test_idle_connection_is_due_though_its_access_token_is_not(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    connection = make_connection(
        alice,
        access_token_expires_at=frozen.now() + timedelta(minutes=50),
        tokens_issued_at=frozen.now() - timedelta(days=31),
    )
    mocked.post(TOKEN_URL, json=token_reply(1))

    assert refresh(connection).outcome == RefreshOutcome.REFRESHED
    assert fresh(connection).tokens_issued_at == frozen.now()


# --- Failure classes -------------------------------------------------------------------


@pytest.mark.parametrize("code", ["invalid_grant", "unauthorized_client"])
def test_dead_grant_marks_needs_reconnect_and_emails_the_user_once(
    due: JiraConnection, mocked: responses.RequestsMock, code: str
) -> None:
    mocked.post(TOKEN_URL, status=403, json={"error": code, "error_description": "Unknown or invalid refresh token."})

    result = refresh(due)

    assert result.outcome == RefreshOutcome.NEEDS_RECONNECT
    row = fresh(due)
    assert row.status == ConnectionStatus.NEEDS_RECONNECT
    assert row.status_reason == "grant_revoked"
    assert (row.claim_id, row.claimed_until, row.next_attempt_at) == (None, None, None)
    # The tokens stay: a reconnect replaces them, a disconnect deletes them.
    assert row.refresh_token == "old-refresh-secret"
    assert event_kinds(due) == [EventKind.NEEDS_RECONNECT]
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["alice@example.com"]
    assert "http://testserver/settings/" in mail.outbox[0].body
    assert_no_secrets(mail.outbox[0].body, "old-refresh-secret", "old-access-secret")


def test_a_second_run_after_the_dead_grant_sends_no_second_email(
    due: JiraConnection, mocked: responses.RequestsMock
) -> None:
    mocked.post(TOKEN_URL, status=403, json={"error": "invalid_grant"})

    refresh(due)
    again = refresh_rejected(due)

    assert again.outcome == RefreshOutcome.NEEDS_RECONNECT
    assert len(token_calls(mocked)) == 1
    assert len(mail.outbox) == 1
    assert event_kinds(due) == [EventKind.NEEDS_RECONNECT]


def test_two_workers_hitting_the_dead_grant_at_once_send_one_email(
    due: JiraConnection, mocked: responses.RequestsMock
) -> None:
    # With the claim switched off, a second worker refreshes while the first one's
    # request is in flight: both get invalid_grant, only one may mark and email.
    nested: list[RefreshResult] = []
    calls = iter(range(2))

    def dead_grant(request: Any) -> tuple[int, dict[str, str], str]:
        if next(calls) == 0:
            nested.append(refresh(due))
        return 403, {}, '{"error": "invalid_grant"}'

    mocked.add_callback(responses.POST, TOKEN_URL, callback=dead_grant)

    with claim_switched_off():
        outer = refresh(due)

    assert [r.outcome for r in nested] == [RefreshOutcome.NEEDS_RECONNECT]
    assert outer.outcome == RefreshOutcome.SUPERSEDED
    assert len(token_calls(mocked)) == 2
    assert len(mail.outbox) == 1
    assert event_kinds(due) == [EventKind.NEEDS_RECONNECT]


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, {"error": "access_denied", "error_description": "Unauthorized"}),
        (401, {}),
        (400, {"error": "invalid_client"}),
    ],
)
def test_refused_client_credentials_raise_configuration_error_and_touch_no_connection(
    due: JiraConnection, mocked: responses.RequestsMock, status: int, body: dict[str, str]
) -> None:
    mocked.post(TOKEN_URL, status=status, json=body)

    with pytest.raises(ConfigurationError, match="ATLASSIAN_CLIENT_SECRET"):
        refresh(due)

    row = fresh(due)
    assert (row.status, row.failure_count, row.next_attempt_at) == (ConnectionStatus.ACTIVE, 0, None)
    assert (row.version, row.refresh_token, row.claim_id) == (due.version, "old-refresh-secret", None)
    assert not ConnectionEvent.objects.exists()
    assert not mail.outbox


def test_rate_limit_schedules_the_next_attempt_from_retry_after(
    due: JiraConnection, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    mocked.post(TOKEN_URL, status=429, headers={"Retry-After": "120"}, json={})

    result = refresh(due)

    assert result.outcome == RefreshOutcome.TRANSIENT_FAILURE
    assert result.retry_at == frozen.now() + timedelta(seconds=120)
    row = fresh(due)
    assert row.status == ConnectionStatus.REFRESH_FAILING
    assert (row.status_reason, row.failure_count) == ("rate_limited", 1)
    assert row.next_attempt_at == frozen.now() + timedelta(seconds=120)
    assert (row.refresh_token, row.version, row.claim_id) == ("old-refresh-secret", due.version, None)
    event = ConnectionEvent.objects.get(connection=due)
    assert event.kind == EventKind.REFRESH_FAILED
    assert event.detail["status"] == 429
    assert len(token_calls(mocked)) == 1


@pytest.mark.parametrize("status", [500, 503])
def test_server_error_backs_off_and_keeps_the_refresh_token_without_an_immediate_retry(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock, status: int
) -> None:
    connection = make_connection(
        alice,
        access_token_expires_at=frozen.now(),
        refresh_token="old-refresh-secret",
        status=ConnectionStatus.REFRESH_FAILING,
        failure_count=2,
    )
    mocked.post(TOKEN_URL, status=status, body="upstream trouble")

    with mock.patch("integrations.lifecycle.refresh.random.uniform", return_value=1.0):
        result = refresh(connection)

    assert result.outcome == RefreshOutcome.TRANSIENT_FAILURE
    row = fresh(connection)
    assert (row.status, row.failure_count) == (ConnectionStatus.REFRESH_FAILING, 3)
    # Third failure: 1 min doubled twice.
    assert row.next_attempt_at == frozen.now() + timedelta(minutes=4)
    assert row.refresh_token == "old-refresh-secret"
    assert len(token_calls(mocked)) == 1
    # Already failing: the turn to failing was the event; this one is counted on the row.
    assert event_kinds(connection) == []


def test_first_failure_records_the_turn_to_failing(
    due: JiraConnection, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    mocked.post(TOKEN_URL, status=500, body="upstream trouble")

    assert refresh(due).outcome == RefreshOutcome.TRANSIENT_FAILURE

    assert fresh(due).status == ConnectionStatus.REFRESH_FAILING
    (event,) = ConnectionEvent.objects.filter(connection=due)
    assert (event.kind, event.detail["reason"], event.detail["status"]) == (EventKind.REFRESH_FAILED, "transient", 500)


@pytest.mark.parametrize(
    ("failures", "jitter", "seconds"),
    [
        (1, 0.7, 42),
        (1, 1.3, 78),
        (6, 1.0, 1920),
        (7, 1.3, 3600),  # 64 min: capped, jitter included
        (5000, 1.3, 3600),  # months of failures: no OverflowError
    ],
)
def test_backoff_is_exponential_with_jitter_and_capped(failures: int, jitter: float, seconds: int) -> None:
    with mock.patch("integrations.lifecycle.refresh.random.uniform", return_value=jitter):
        assert backoff(failures=failures, retry_after=None) == timedelta(seconds=seconds)


@pytest.mark.parametrize("error", [requests.ReadTimeout("read"), requests.ConnectionError("reset")])
def test_lost_reply_is_retried_once_at_once_with_the_same_refresh_token(
    due: JiraConnection, mocked: responses.RequestsMock, frozen: FakeClock, error: Exception
) -> None:
    mocked.post(TOKEN_URL, body=error)
    mocked.post(TOKEN_URL, json=token_reply(1))

    assert refresh(due).outcome == RefreshOutcome.REFRESHED

    assert [body["refresh_token"] for body in token_calls(mocked)] == ["old-refresh-secret"] * 2
    assert frozen.sleeps == []
    assert fresh(due).refresh_token == "new-refresh-1-secret"


@pytest.mark.parametrize("status", [502, 504])
def test_gateway_error_is_retried_once_at_once_with_the_same_refresh_token(
    due: JiraConnection, mocked: responses.RequestsMock, frozen: FakeClock, status: int
) -> None:
    # A gateway's 502/504 may come after Atlassian rotated: waiting a backoff could
    # carry the retry past the 10-minute leeway.
    mocked.post(TOKEN_URL, status=status, body="bad gateway")
    mocked.post(TOKEN_URL, json=token_reply(1))

    assert refresh(due).outcome == RefreshOutcome.REFRESHED

    assert [body["refresh_token"] for body in token_calls(mocked)] == ["old-refresh-secret"] * 2
    assert frozen.sleeps == []
    assert fresh(due).refresh_token == "new-refresh-1-secret"


def test_garbled_success_reply_is_retried_once_with_the_same_refresh_token(
    due: JiraConnection, mocked: responses.RequestsMock
) -> None:
    mocked.post(TOKEN_URL, body="<html>proxy page</html>")
    mocked.post(TOKEN_URL, json=token_reply(1))

    assert refresh(due).outcome == RefreshOutcome.REFRESHED
    assert [body["refresh_token"] for body in token_calls(mocked)] == ["old-refresh-secret"] * 2


def test_two_lost_replies_leave_the_connection_failing_with_its_refresh_token(
    due: JiraConnection, mocked: responses.RequestsMock
) -> None:
    mocked.post(TOKEN_URL, body=requests.ReadTimeout("read"))
    mocked.post(TOKEN_URL, body=requests.ReadTimeout("read"))

    result = refresh(due)

    assert result.outcome == RefreshOutcome.TRANSIENT_FAILURE
    assert len(token_calls(mocked)) == 2
    row = fresh(due)
    assert (row.status, row.refresh_token, row.claim_id) == (
        ConnectionStatus.REFRESH_FAILING,
        "old-refresh-secret",
        None,
    )
    assert event_kinds(due) == [EventKind.REFRESH_FAILED]


def test_a_successful_refresh_clears_the_failure_state_and_records_the_recovery(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    connection = make_connection(
        alice,
        access_token_expires_at=frozen.now(),
        status=ConnectionStatus.REFRESH_FAILING,
        status_reason="transient",
        failure_count=4,
        next_attempt_at=frozen.now() - timedelta(seconds=1),
    )
    mocked.post(TOKEN_URL, json=token_reply(1))

    assert refresh(connection).outcome == RefreshOutcome.REFRESHED
    row = fresh(connection)
    assert (row.status, row.status_reason, row.failure_count, row.next_attempt_at) == (
        ConnectionStatus.ACTIVE,
        "",
        0,
        None,
    )
    # The turn back to active is the one audit row a success writes.
    event = ConnectionEvent.objects.get(connection=connection)
    assert event.kind == EventKind.RECOVERED
    assert event.detail == {"rotated": True, "version": connection.version + 1}


# --- Who may refresh -------------------------------------------------------------------


def test_needs_reconnect_connection_is_never_refreshed(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    connection = make_connection(alice, access_token_expires_at=frozen.now(), status=ConnectionStatus.NEEDS_RECONNECT)

    assert refresh_rejected(connection).outcome == RefreshOutcome.NEEDS_RECONNECT
    assert len(mocked.calls) == 0


def test_connection_in_backoff_is_not_refreshed_unless_backoff_is_ignored(
    due: JiraConnection, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    retry_at = frozen.now() + timedelta(minutes=5)
    JiraConnection.objects.filter(pk=due.pk).update(status=ConnectionStatus.REFRESH_FAILING, next_attempt_at=retry_at)
    mocked.post(TOKEN_URL, json=token_reply(1))

    waiting = refresh(due)
    assert (waiting.outcome, waiting.retry_at) == (RefreshOutcome.NOT_DUE, retry_at)
    assert len(mocked.calls) == 0

    assert refresh(due, ignore_backoff=True).outcome == RefreshOutcome.REFRESHED
    assert len(token_calls(mocked)) == 1


def test_connection_claimed_by_another_worker_is_not_refreshed(
    due: JiraConnection, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    other = "6f1c3a52-0000-4000-8000-000000000001"
    until = frozen.now() + timedelta(seconds=30)
    JiraConnection.objects.filter(pk=due.pk).update(claim_id=other, claimed_until=until)

    result = refresh_rejected(due)

    assert result.outcome == RefreshOutcome.CLAIMED_ELSEWHERE
    assert len(mocked.calls) == 0
    row = fresh(due)
    assert (str(row.claim_id), row.claimed_until, row.version) == (other, until, due.version)


def test_stale_claim_of_a_crashed_worker_is_taken_over(
    due: JiraConnection, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    JiraConnection.objects.filter(pk=due.pk).update(
        claim_id="6f1c3a52-0000-4000-8000-000000000001", claimed_until=frozen.now() - timedelta(seconds=1)
    )
    mocked.post(TOKEN_URL, json=token_reply(1))

    assert refresh(due).outcome == RefreshOutcome.REFRESHED
    row = fresh(due)
    assert (row.refresh_token, row.claim_id, row.claimed_until) == ("new-refresh-1-secret", None, None)


def test_claim_is_held_during_the_call_and_its_lease_counts_from_the_wall_clock(
    due: JiraConnection, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    seen: list[Any] = []

    def reply(request: Any) -> tuple[int, dict[str, str], str]:
        row = fresh(due)
        seen.append((row.claim_id is not None, row.claimed_until))
        return 200, {}, json.dumps(token_reply(1))

    mocked.add_callback(responses.POST, TOKEN_URL, callback=reply)

    # The due list was read ten minutes ago: the lease still runs from the claim.
    frozen.advance(minutes=10)
    refresh(due)

    assert seen == [(True, frozen.now() + CLAIM_LEASE)]


def test_a_crashed_workers_claim_lapses_within_three_minutes(
    due: JiraConnection, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    # Killed mid-call: no release. The retry must come well inside the 10-minute leeway.
    mocked.post(TOKEN_URL, body=requests.ConnectionError("killed"))
    mocked.post(TOKEN_URL, body=requests.ConnectionError("killed"))
    with mock.patch("integrations.lifecycle.refresh._release"), mock.patch("integrations.lifecycle.refresh._failed"):
        refresh(due)
    mocked.post(TOKEN_URL, json=token_reply(1))

    frozen.advance(minutes=1)
    assert refresh(due).outcome == RefreshOutcome.CLAIMED_ELSEWHERE
    frozen.advance(minutes=2)
    assert refresh(due).outcome == RefreshOutcome.REFRESHED
    assert [body["refresh_token"] for body in token_calls(mocked)] == ["old-refresh-secret"] * 3


def test_a_failure_after_the_lease_lapsed_leaves_the_new_owners_claim_and_state(
    due: JiraConnection, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    other = "6f1c3a52-0000-4000-8000-000000000002"
    until = frozen.now() + timedelta(minutes=2)

    def taken_over_meanwhile(request: Any) -> tuple[int, dict[str, str], str]:
        # Our call outlived the lease; another worker claimed the row and is mid-refresh.
        JiraConnection.objects.filter(pk=due.pk).update(claim_id=other, claimed_until=until)
        return 500, {}, "upstream trouble"

    mocked.add_callback(responses.POST, TOKEN_URL, callback=taken_over_meanwhile)

    result = refresh(due)

    assert result.outcome == RefreshOutcome.SUPERSEDED
    row = fresh(due)
    assert (str(row.claim_id), row.claimed_until) == (other, until)
    assert (row.status, row.failure_count, row.next_attempt_at) == (ConnectionStatus.ACTIVE, 0, None)
    assert event_kinds(due) == []


def test_a_needs_reconnect_mark_made_during_the_call_is_not_undone_by_the_store(
    due: JiraConnection, mocked: responses.RequestsMock, staff: User
) -> None:
    def staff_marks_meanwhile(request: Any) -> tuple[int, dict[str, str], str]:
        connection_mark_needs_reconnect(
            connection_id=due.pk, reason="staff", message="Marked by support.", actor=Actor.STAFF, actor_user=staff
        )
        return 200, {}, json.dumps(token_reply(1))

    mocked.add_callback(responses.POST, TOKEN_URL, callback=staff_marks_meanwhile)

    result = refresh(due)

    assert result.outcome == RefreshOutcome.SUPERSEDED
    row = fresh(due)
    assert (row.status, row.status_reason) == (ConnectionStatus.NEEDS_RECONNECT, "staff")
    assert (row.refresh_token, row.version) == ("old-refresh-secret", due.version)
    assert event_kinds(due) == [EventKind.STAFF_MARK_NEEDS_RECONNECT]


def test_gone_connection_is_reported_gone(mocked: responses.RequestsMock, db: None) -> None:
    assert connection_refresh_if_due(connection_id=999_999).outcome == RefreshOutcome.GONE


def test_unreadable_refresh_token_marks_needs_reconnect_without_a_token_call(
    due: JiraConnection, mocked: responses.RequestsMock
) -> None:
    with override_settings(FERNET_KEYS=[OTHER_FERNET_KEY]):
        result = refresh(due)

    assert result.outcome == RefreshOutcome.NEEDS_RECONNECT
    assert len(mocked.calls) == 0
    row = fresh(due)
    assert (row.status, row.status_reason) == (ConnectionStatus.NEEDS_RECONNECT, "token_unreadable")
    # The ciphertext is untouched: re-adding the key recovers the connection.
    assert row.refresh_token == "old-refresh-secret"


# --- Compare-and-swap ------------------------------------------------------------------


def test_refresh_whose_version_moved_during_the_call_does_not_overwrite(
    due: JiraConnection, mocked: responses.RequestsMock
) -> None:
    def reconnect_meanwhile(request: Any) -> tuple[int, dict[str, str], str]:
        # A reconnect (or a worker after our lease lapsed) writes newer tokens.
        JiraConnection.objects.filter(pk=due.pk).update(
            access_token="reconnected-access", refresh_token="reconnected-refresh", version=F("version") + 1
        )
        return 200, {}, json.dumps(token_reply(1))

    mocked.add_callback(responses.POST, TOKEN_URL, callback=reconnect_meanwhile)

    result = refresh(due)

    assert result.outcome == RefreshOutcome.SUPERSEDED
    row = fresh(due)
    assert (row.access_token, row.refresh_token) == ("reconnected-access", "reconnected-refresh")
    assert row.version == due.version + 1
    assert not ConnectionEvent.objects.filter(kind=EventKind.REFRESHED).exists()


def test_invalid_grant_after_the_version_moved_does_not_mark_needs_reconnect(
    due: JiraConnection, mocked: responses.RequestsMock
) -> None:
    def refreshed_elsewhere(request: Any) -> tuple[int, dict[str, str], str]:
        JiraConnection.objects.filter(pk=due.pk).update(refresh_token="newer-refresh", version=F("version") + 1)
        return 403, {}, '{"error": "invalid_grant"}'

    mocked.add_callback(responses.POST, TOKEN_URL, callback=refreshed_elsewhere)

    result = refresh(due)

    assert result.outcome == RefreshOutcome.SUPERSEDED
    row = fresh(due)
    assert (row.status, row.refresh_token) == (ConnectionStatus.ACTIVE, "newer-refresh")
    assert not mail.outbox
    assert not ConnectionEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_rotated_pair_is_stored_through_a_brief_database_outage(
    due: JiraConnection, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    mocked.post(TOKEN_URL, json=token_reply(1))
    failures = iter([OperationalError("database is locked")])

    def flaky_store(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.startswith("UPDATE") and '"access_token" = ' in sql:
            error = next(failures, None)
            if error is not None:
                raise error
        return execute(sql, params, many, context)

    with db_connection.execute_wrapper(flaky_store):
        result = refresh(due)

    assert result.outcome == RefreshOutcome.REFRESHED
    assert fresh(due).refresh_token == "new-refresh-1-secret"
    assert frozen.sleeps == [0.5]


# --- Secrets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        {"json": token_reply(1)},
        {"status": 403, "json": {"error": "invalid_grant"}},
        {"status": 429, "json": {}},
        {"status": 503, "body": "down"},
        {"status": 401, "json": {"error": "access_denied"}},
        {"body": requests.ReadTimeout("read")},
        {"body": "not json"},
    ],
)
def test_no_token_or_client_secret_reaches_logs_events_or_results(
    due: JiraConnection, mocked: responses.RequestsMock, caplog: pytest.LogCaptureFixture, reply: dict[str, Any]
) -> None:
    mocked.post(TOKEN_URL, **reply)
    mocked.post(TOKEN_URL, **reply)
    caplog.set_level(logging.DEBUG)

    try:
        result: object = refresh(due)
    except ConfigurationError as exc:
        result = exc

    events = list(ConnectionEvent.objects.values_list("message", "detail"))
    text = f"{caplog.text} {events} {result!r} {result} {fresh(due)!r} {fresh(due)}"
    assert_no_secrets(text, "old-refresh-secret", "old-access-secret", "new-refresh-1-secret", "new-access-1-secret")
