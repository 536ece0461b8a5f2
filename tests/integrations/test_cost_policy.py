"""Cost follows use: what the scheduled run refreshes, how use is recorded, what the audit
trail keeps, and the consent-expiry warnings (lifecycle.due, access, events, consent)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import responses
from django.core import mail
from django.db import connection as db_connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from integrations.lifecycle import run as refresh_run
from integrations.lifecycle.access import USE_RECORD_INTERVAL, ConnectionTokens, connection_record_use, jira_for
from integrations.lifecycle.consent import consent_warnings_send
from integrations.lifecycle.events import PRUNE_BATCH, events_prune
from integrations.models import (
    CONSENT_LIFETIME,
    ConnectionEvent,
    ConnectionStatus,
    EventKind,
    JiraConnection,
)
from tests.support.atlassian import TOKEN_URL, token_calls, token_reply
from tests.support.clock import FakeClock, install_clock
from tests.support.connections import ConnectionFactory, fresh

pytestmark = pytest.mark.django_db


def run_once(**options: Any) -> refresh_run.RunSummary:
    return refresh_run.refresh_due(refresh_run.RunOptions(concurrency=1, **options))


# --- What the run refreshes ---------------------------------------------------------------


def test_run_refreshes_used_connections_before_expiry_and_leaves_unused_ones_to_demand(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    expiring = frozen.now() + timedelta(minutes=10)
    used = make_connection(alice, access_token_expires_at=expiring, last_used_at=frozen.now() - timedelta(hours=23))
    stale = make_connection(alice, access_token_expires_at=expiring, last_used_at=frozen.now() - timedelta(hours=25))
    never = make_connection(alice, access_token_expires_at=frozen.now() - timedelta(days=3), last_used_at=None)
    mocked.post(TOKEN_URL, json=token_reply(1))

    summary = run_once()

    assert (summary.due, summary.counts["refreshed"]) == (1, 1)
    assert fresh(used).version == used.version + 1
    assert fresh(stale).version == stale.version
    assert fresh(never).version == never.version
    assert len(token_calls(mocked)) == 1


def test_run_keeps_an_unused_connection_alive_once_its_refresh_token_idles_30_days(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    idle = make_connection(
        alice,
        access_token_expires_at=frozen.now() - timedelta(days=29),
        tokens_issued_at=frozen.now() - timedelta(days=30),
        last_used_at=None,
    )
    younger = make_connection(alice, tokens_issued_at=frozen.now() - timedelta(days=29, hours=23), last_used_at=None)
    mocked.post(TOKEN_URL, json=token_reply(1))

    assert run_once().counts["refreshed"] == 1

    assert fresh(idle).tokens_issued_at == frozen.now()
    assert fresh(younger).version == younger.version


def test_run_retries_a_failing_connection_once_its_backoff_ends_and_not_before(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    failing = make_connection(
        alice,
        last_used_at=None,
        status=ConnectionStatus.REFRESH_FAILING,
        failure_count=1,
        next_attempt_at=frozen.now() + timedelta(minutes=2),
    )
    mocked.post(TOKEN_URL, json=token_reply(1))

    assert run_once().due == 0
    assert run_once(ignore_backoff=True).counts["refreshed"] == 1
    assert fresh(failing).status == ConnectionStatus.ACTIVE
    assert [e.kind for e in ConnectionEvent.objects.filter(connection=failing)] == [EventKind.RECOVERED]


def test_warm_within_widens_what_counts_as_in_use(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    make_connection(
        alice,
        access_token_expires_at=frozen.now() + timedelta(minutes=5),
        last_used_at=frozen.now() - timedelta(days=2),
    )
    mocked.post(TOKEN_URL, json=token_reply(1))

    assert run_once().due == 0
    assert run_once(warm_within=timedelta(days=3)).counts["refreshed"] == 1


def test_routine_refreshes_add_no_audit_rows_and_count_on_the_connection(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    connection = make_connection(alice, access_token_expires_at=frozen.now() + timedelta(minutes=5))
    for n in range(3):
        mocked.post(TOKEN_URL, json=token_reply(n))
        assert run_once().counts["refreshed"] == 1
        frozen.advance(minutes=50)

    assert fresh(connection).refresh_count == 3
    assert not ConnectionEvent.objects.filter(connection=connection).exists()


# --- Recording use ------------------------------------------------------------------------


def test_use_is_recorded_at_most_once_per_interval(
    alice: User, make_connection: ConnectionFactory, frozen: FakeClock
) -> None:
    connection = make_connection(alice, last_used_at=None)

    assert connection_record_use(connection_id=connection.pk, now=frozen.now()) is True
    frozen.advance(seconds=USE_RECORD_INTERVAL.total_seconds() - 1)
    assert connection_record_use(connection_id=connection.pk, now=frozen.now()) is False
    assert fresh(connection).last_used_at == frozen.now() - USE_RECORD_INTERVAL + timedelta(seconds=1)
    frozen.advance(seconds=2)
    assert connection_record_use(connection_id=connection.pk, now=frozen.now()) is True
    assert fresh(connection).last_used_at == frozen.now()


def test_a_jira_call_records_use_once_per_client_and_leaves_the_version_alone(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    connection = make_connection(alice, last_used_at=None)
    (site,) = list(jira_for(alice))
    myself = f"https://api.atlassian.com/ex/jira/{site.site.cloud_id}/rest/api/3/myself"
    mocked.get(myself, json={"accountId": "557058:abc"})

    with CaptureQueriesContext(db_connection) as queries:
        site.client.myself()
        site.client.myself()

    row = fresh(connection)
    assert row.last_used_at == frozen.now()
    assert row.version == connection.version
    assert sum(1 for q in queries.captured_queries if q["sql"].startswith("UPDATE")) == 1


def test_a_recently_used_connection_costs_no_write_at_all(
    alice: User, make_connection: ConnectionFactory, frozen: FakeClock
) -> None:
    connection = make_connection(alice, last_used_at=frozen.now() - timedelta(minutes=1))
    tokens = ConnectionTokens.preloaded(JiraConnection.objects.get(pk=connection.pk))

    with CaptureQueriesContext(db_connection) as queries:
        tokens.access_token()

    assert queries.captured_queries == []


def test_my_jira_records_that_the_connection_was_used(
    client: Client, alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    connection = make_connection(alice, last_used_at=None)
    site = connection.sites.get()
    mocked.get(
        f"https://api.atlassian.com/ex/jira/{site.cloud_id}/rest/api/3/search/jql",
        json={"issues": [], "isLast": True},
    )
    client.force_login(alice)

    assert client.get("/jira/").status_code == 200

    assert fresh(connection).last_used_at == frozen.now()


# --- The audit trail's size ---------------------------------------------------------------


def test_events_older_than_the_retention_are_pruned_in_batches_and_newer_ones_kept(
    alice: User, make_connection: ConnectionFactory, frozen: FakeClock, settings: Any
) -> None:
    settings.EVENT_RETENTION_DAYS = 365
    connection = make_connection(alice)
    old = frozen.now() - timedelta(days=366)
    ConnectionEvent.objects.bulk_create(
        ConnectionEvent(connection=connection, kind=EventKind.REFRESH_FAILED, created_at=old)
        for _ in range(PRUNE_BATCH + 5)
    )
    kept = ConnectionEvent.objects.create(
        connection=connection, kind=EventKind.CONNECTED, created_at=frozen.now() - timedelta(days=364)
    )

    assert events_prune(now=frozen.now(), max_batches=1) == PRUNE_BATCH
    assert events_prune(now=frozen.now()) == 5
    assert list(ConnectionEvent.objects.values_list("pk", flat=True)) == [kept.pk]


def test_the_run_prunes_old_events_and_says_how_many(
    alice: User, make_connection: ConnectionFactory, frozen: FakeClock
) -> None:
    connection = make_connection(alice)
    ConnectionEvent.objects.create(
        connection=connection, kind=EventKind.CONNECTED, created_at=frozen.now() - timedelta(days=400)
    )

    assert run_once().events_pruned == 1
    assert not ConnectionEvent.objects.exists()


# --- Consent expiry -------------------------------------------------------------------------


def consented(frozen: FakeClock, *, days_left: float) -> dict[str, Any]:
    return {"first_consented_at": frozen.now() + timedelta(days=days_left) - CONSENT_LIFETIME}


def test_each_user_is_warned_14_days_and_1_day_before_the_consent_ends_once_each(
    alice: User, make_connection: ConnectionFactory, frozen: FakeClock
) -> None:
    connection = make_connection(alice, **consented(frozen, days_left=14.5))

    assert consent_warnings_send(now=frozen.now()) == 0
    frozen.advance(days=0.5)
    # Overlapping runs: the first claims the warning, the second finds it sent.
    assert consent_warnings_send(now=frozen.now()) == 1
    assert consent_warnings_send(now=frozen.now()) == 0
    frozen.advance(days=12.5)
    assert consent_warnings_send(now=frozen.now()) == 0
    frozen.advance(days=0.5)
    assert consent_warnings_send(now=frozen.now()) == 1
    assert consent_warnings_send(now=frozen.now()) == 0

    assert [m.to for m in mail.outbox] == [["alice@example.com"]] * 2
    assert "in 14 days" in mail.outbox[0].body
    assert "tomorrow" in mail.outbox[1].body
    assert "/settings/" in mail.outbox[0].body
    assert fresh(connection).consent_warnings_sent == 2
    kinds = ConnectionEvent.objects.filter(connection=connection).values_list("kind", flat=True)
    assert list(kinds) == [EventKind.CONSENT_EXPIRY_WARNED] * 2


def test_a_connection_first_seen_inside_the_last_day_gets_one_warning(
    alice: User, make_connection: ConnectionFactory, frozen: FakeClock
) -> None:
    make_connection(alice, **consented(frozen, days_left=0.5))

    assert consent_warnings_send(now=frozen.now()) == 1
    assert consent_warnings_send(now=frozen.now()) == 0
    assert len(mail.outbox) == 1


def test_no_warning_for_a_connection_past_its_consent_or_needing_reconnect(
    alice: User, make_connection: ConnectionFactory, frozen: FakeClock
) -> None:
    make_connection(alice, **consented(frozen, days_left=-1))
    make_connection(alice, status=ConnectionStatus.NEEDS_RECONNECT, **consented(frozen, days_left=5))

    assert consent_warnings_send(now=frozen.now()) == 0
    assert mail.outbox == []


def test_a_warning_lost_to_a_mail_outage_is_sent_by_the_next_run(
    alice: User, make_connection: ConnectionFactory, frozen: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = make_connection(alice, **consented(frozen, days_left=10))

    def mail_down(*args: Any, **kwargs: Any) -> None:
        raise OSError("SMTP down")

    monkeypatch.setattr("integrations.lifecycle.consent.send_mail", mail_down)
    assert consent_warnings_send(now=frozen.now()) == 0
    assert fresh(connection).consent_warnings_sent == 0
    monkeypatch.undo()
    install_clock(monkeypatch).current = frozen.now()

    assert consent_warnings_send(now=frozen.now()) == 1
    assert len(mail.outbox) == 1


def test_settings_page_counts_down_the_last_30_days(
    client: Client, alice: User, make_connection: ConnectionFactory, frozen: FakeClock
) -> None:
    soon = make_connection(alice, **consented(frozen, days_left=12.5))
    later = make_connection(alice, account_id="557058:later", **consented(frozen, days_left=31))
    client.force_login(alice)

    page = client.get("/settings/").content.decode()

    assert f'id="consent-countdown-{soon.pk}"' in page
    assert "Reconnect within 12 days" in page
    assert f'id="consent-countdown-{later.pk}"' not in page
