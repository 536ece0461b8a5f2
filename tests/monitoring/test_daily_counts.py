"""Daily aggregates: every refresh counted by outcome, reason and source, written with
one upsert per flush (never a row per event), kept for a bounded time."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any
from unittest import mock

import pytest
import requests
import responses
from django.db import DatabaseError
from django.db import connection as db
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from integrations import clock
from integrations.lifecycle.access import connection_access_token
from integrations.lifecycle.run import RunOptions, refresh_due
from integrations.models import ConnectionStatus, JiraConnection
from monitoring import recorder
from monitoring.models import REFRESH_RUN, DailyCount, Kind, RunHeartbeat
from tests.support.accounts import login_verified
from tests.support.atlassian import TOKEN_URL, token_reply
from tests.support.clock import FakeClock, install_clock
from tests.support.connections import ConnectionFactory

pytestmark = pytest.mark.django_db

TABLE = DailyCount._meta.db_table


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    return install_clock(monkeypatch)


class Stopwatch:
    """clock.monotonic() that moves only when a fake token endpoint takes its time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def answer_after(self, durations: list[float]) -> Any:
        """A token endpoint whose n-th answer takes durations[n] seconds."""
        answered = iter(enumerate(durations))

        def reply(request: Any) -> tuple[int, dict[str, str], str]:
            n, seconds = next(answered)
            self.now += seconds
            return 200, {}, json.dumps(token_reply(n))

        return reply


@pytest.fixture
def stopwatch(monkeypatch: pytest.MonkeyPatch) -> Stopwatch:
    watch = Stopwatch()
    monkeypatch.setattr(clock, "monotonic", watch.monotonic)
    return watch


def counts(kind: Kind = Kind.REFRESH, *, day: date | None = None) -> dict[tuple[str, str, str], int]:
    rows = DailyCount.objects.filter(kind=kind).exclude(day=recorder.LIFETIME)
    if day is not None:
        rows = rows.filter(day=day)
    return {(r.outcome, r.reason, r.source): r.value for r in rows}


def lifetime(kind: Kind = Kind.REFRESH) -> dict[tuple[str, str, str], int]:
    rows = DailyCount.objects.filter(kind=kind, day=recorder.LIFETIME)
    return {(r.outcome, r.reason, r.source): r.value for r in rows}


def upserts(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if TABLE in q["sql"] and "INSERT" in q["sql"]]


def due_connections(user: User, make_connection: ConnectionFactory, frozen: FakeClock, n: int) -> list[JiraConnection]:
    return [
        make_connection(user, access_token_expires_at=frozen.now() + timedelta(minutes=5), last_used_at=frozen.now())
        for _ in range(n)
    ]


def run_once() -> None:
    summary = refresh_due(RunOptions(concurrency=1))
    assert summary.configuration_error is None


# --- The scheduled run -------------------------------------------------------------------


def test_a_scheduled_run_counts_each_outcome_and_writes_them_in_one_upsert(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    due_connections(alice, make_connection, frozen, 5)
    for n in range(3):
        mocked.post(TOKEN_URL, json=token_reply(n))
    mocked.post(TOKEN_URL, json={"error": "invalid_grant"}, status=403)
    mocked.post(TOKEN_URL, json={"error": "server_error"}, status=500)

    with CaptureQueriesContext(db) as queries:
        run_once()

    assert counts(day=frozen.now().date()) == {
        ("refreshed", "", "scheduled"): 3,
        ("needs_reconnect", "grant_revoked", "scheduled"): 1,
        ("transient_failure", "transient", "scheduled"): 1,
    }
    assert len(upserts(queries)) == 1
    assert lifetime() == counts()


def test_counts_add_up_across_runs_on_the_same_day_and_split_by_day(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    first_day = frozen.now().date()
    for n in range(3):
        mocked.post(TOKEN_URL, json=token_reply(n))
    due_connections(alice, make_connection, frozen, 1)
    run_once()
    due_connections(alice, make_connection, frozen, 1)
    run_once()
    # Unused since: the two are not due tomorrow, only the new one is.
    JiraConnection.objects.update(last_used_at=None)
    frozen.advance(days=1)
    due_connections(alice, make_connection, frozen, 1)
    run_once()

    assert counts(day=first_day) == {("refreshed", "", "scheduled"): 2}
    assert counts(day=first_day + timedelta(days=1)) == {("refreshed", "", "scheduled"): 1}
    assert lifetime() == {("refreshed", "", "scheduled"): 3}


def test_a_long_run_writes_as_it_goes_once_the_flush_interval_has_passed(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    connections = due_connections(alice, make_connection, frozen, 5)
    for n in range(5):
        mocked.post(TOKEN_URL, json=token_reply(n))
    original = recorder.count_event

    def slow_count(**kwargs: Any) -> None:
        original(**kwargs)
        if kwargs["kind"] == Kind.REFRESH:
            frozen.advance(seconds=40)

    with (
        override_settings(MONITORING_FLUSH_SECONDS=60),
        mock.patch.object(recorder, "count_event", slow_count),
        CaptureQueriesContext(db) as queries,
    ):
        run_once()

    # Refreshes end 40 s apart: the buffer is 60 s old after the 2nd and the 4th, and
    # the end of the run writes the 5th.
    assert len(upserts(queries)) == 3
    assert counts() == {("refreshed", "", "scheduled"): len(connections)}


def test_a_recovery_is_counted_apart_from_a_routine_refresh(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    make_connection(
        alice,
        status=ConnectionStatus.REFRESH_FAILING,
        status_reason="transient",
        failure_count=2,
        next_attempt_at=frozen.now() - timedelta(minutes=1),
    )
    mocked.post(TOKEN_URL, json=token_reply(1))

    run_once()

    assert counts() == {("recovered", "", "scheduled"): 1}


def test_a_refresh_that_raises_is_counted_as_an_error_with_its_class(
    alice: User, make_connection: ConnectionFactory, frozen: FakeClock
) -> None:
    due_connections(alice, make_connection, frozen, 1)

    with mock.patch("integrations.lifecycle.refresh._call_refresh", side_effect=RuntimeError("bug")):
        summary = refresh_due(RunOptions(concurrency=1))

    assert summary.errors == 1
    assert counts() == {("error", "RuntimeError", "scheduled"): 1}


# --- Token-endpoint latency ------------------------------------------------------------


def test_token_endpoint_latency_is_counted_in_fixed_buckets_with_its_sum(
    alice: User,
    make_connection: ConnectionFactory,
    mocked: responses.RequestsMock,
    frozen: FakeClock,
    stopwatch: Stopwatch,
) -> None:
    due_connections(alice, make_connection, frozen, 2)
    mocked.add_callback(responses.POST, TOKEN_URL, callback=stopwatch.answer_after([0.05, 3.0]))

    run_once()

    assert counts(Kind.TOKEN_LATENCY) == {
        ("0.1", "", "scheduled"): 1,
        ("5.0", "", "scheduled"): 1,
        ("sum_ms", "", "scheduled"): 3050,
    }


def test_a_lost_reply_and_its_retry_are_two_timed_round_trips(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    due_connections(alice, make_connection, frozen, 1)
    mocked.post(TOKEN_URL, body=requests.ReadTimeout("read"))
    mocked.post(TOKEN_URL, json=token_reply(1))

    run_once()

    latency = counts(Kind.TOKEN_LATENCY)
    assert sum(n for (bucket, _, _), n in latency.items() if bucket != "sum_ms") == 2
    assert counts() == {("refreshed", "", "scheduled"): 1}


def test_latency_buckets_are_upper_bounds() -> None:
    assert recorder.latency_bucket(0.1) == "0.1"
    assert recorder.latency_bucket(0.1001) == "0.25"
    assert recorder.latency_bucket(30.0) == "30.0"
    assert recorder.latency_bucket(31.0) == "+Inf"


# --- On demand (web requests) --------------------------------------------------------------


def test_on_demand_refreshes_write_nothing_until_a_request_ends_after_the_interval(
    alice: User,
    make_connection: ConnectionFactory,
    mocked: responses.RequestsMock,
    frozen: FakeClock,
    client: Client,
) -> None:
    first, second = (
        make_connection(alice, access_token_expires_at=frozen.now() - timedelta(seconds=5)) for _ in range(2)
    )
    mocked.post(TOKEN_URL, json=token_reply(1))
    mocked.post(TOKEN_URL, json=token_reply(2))

    with override_settings(MONITORING_FLUSH_SECONDS=60), CaptureQueriesContext(db) as queries:
        connection_access_token(connection_id=first.pk)
        connection_access_token(connection_id=second.pk)
        client.get("/healthz")
        written_early = DailyCount.objects.count()
        frozen.advance(seconds=60)
        client.get("/healthz")

    assert written_early == 0
    assert len(upserts(queries)) == 1
    assert counts() == {("refreshed", "", "on_demand"): 2}
    assert recorder.pending() == {}


def test_staff_refresh_now_is_counted_as_staff(
    client: Client,
    staff: User,
    alice: User,
    make_connection: ConnectionFactory,
    frozen: FakeClock,
    mocked: responses.RequestsMock,
) -> None:
    connection = make_connection(alice)
    mocked.post(TOKEN_URL, json=token_reply(1))
    login_verified(client, staff)

    client.post(
        "/admin/integrations/jiraconnection/",
        {"action": "refresh_now", "index": "0", "_selected_action": [str(connection.pk)]},
    )

    assert recorder.pending()[(frozen.now().date(), "refresh", "refreshed", "", "staff")] == 1


# --- Writing -----------------------------------------------------------------------------


def test_a_flush_that_fails_keeps_its_counts_for_the_next(frozen: FakeClock, db: None) -> None:
    recorder.count_event(kind=Kind.REFRESH, outcome="refreshed", source="on_demand", value=2)

    with mock.patch.object(recorder, "_upsert", side_effect=DatabaseError("gone")):
        assert recorder.flush() == 0
    recorder.count_event(kind=Kind.REFRESH, outcome="refreshed", source="on_demand")
    recorder.flush()

    assert counts() == {("refreshed", "", "on_demand"): 3}


def test_an_upsert_of_more_keys_than_one_statement_holds_writes_them_all(frozen: FakeClock, db: None) -> None:
    for n in range(recorder.UPSERT_ROWS):
        recorder.count_event(kind=Kind.REFRESH, outcome="transient_failure", reason=f"reason-{n}", source="x")

    written = recorder.flush()

    # Each key has its day row and its lifetime row.
    assert written == 2 * recorder.UPSERT_ROWS
    assert DailyCount.objects.count() == 2 * recorder.UPSERT_ROWS


# --- Retention and the heartbeat -----------------------------------------------------------


def test_the_run_prunes_days_past_retention_but_keeps_lifetime_totals(frozen: FakeClock, db: None) -> None:
    today = frozen.now().date()
    for age in (0, 10, 11):
        DailyCount.objects.create(day=today - timedelta(days=age), kind=Kind.REFRESH, outcome="refreshed", value=1)
    DailyCount.objects.create(day=recorder.LIFETIME, kind=Kind.REFRESH, outcome="refreshed", value=3)

    with override_settings(MONITORING_RETENTION_DAYS=10):
        run_once()

    kept = sorted(DailyCount.objects.values_list("day", flat=True))
    assert kept == [recorder.LIFETIME, today - timedelta(days=10), today]


def test_a_finished_run_records_its_time(frozen: FakeClock, db: None) -> None:
    run_once()
    first = RunHeartbeat.objects.get(name=REFRESH_RUN).last_success_at
    frozen.advance(minutes=5)
    run_once()

    assert first == frozen.now() - timedelta(minutes=5)
    assert RunHeartbeat.objects.get(name=REFRESH_RUN).last_success_at == frozen.now()


def test_a_run_stopped_by_a_configuration_error_records_no_success(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    due_connections(alice, make_connection, frozen, 1)
    mocked.post(TOKEN_URL, json={"error": "invalid_client"}, status=401)

    summary = refresh_due(RunOptions(concurrency=1))

    assert summary.configuration_error is not None
    assert not RunHeartbeat.objects.exists()
    assert recorder.pending()[(frozen.now().date(), "refresh", "error", "ConfigurationError", "scheduled")] == 1
