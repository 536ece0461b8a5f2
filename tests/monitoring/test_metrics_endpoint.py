"""/metrics: off unless configured, token- or address-protected, and the numbers it reports."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import pytest
import responses
from django.test import Client, override_settings
from prometheus_client.parser import text_string_to_metric_families

from accounts.models import User
from integrations import clock
from integrations.lifecycle.access import CLAIM_POLL_SECONDS, connection_access_token
from integrations.models import ConnectionStatus
from integrations.webhook_health import Health
from monitoring import metrics, recorder
from monitoring.models import REFRESH_RUN, Kind, RunHeartbeat
from tests.support.atlassian import TOKEN_URL, token_reply
from tests.support.clock import install_clock
from tests.support.connections import ConnectionFactory
from tests.support.processes import improperly_configured, manage, production_env, settings_seen
from tests.support.webhooks import add_webhooks, only_site

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-" + "m" * 40
BEARER = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with override_settings(METRICS_TOKEN=TOKEN):
        response = client.get("/metrics", **BEARER)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    return samples(response.content)


# --- Access --------------------------------------------------------------------------------


def test_metrics_are_not_found_unless_configured(client: Client) -> None:
    assert client.get("/metrics", **BEARER).status_code == 404


@pytest.mark.parametrize(
    "header",
    [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"],
    ids=["none", "wrong", "basic", "longer", "empty"],
)
def test_metrics_without_the_right_bearer_token_are_refused(client: Client, header: str | None) -> None:
    extra = {} if header is None else {"HTTP_AUTHORIZATION": header}

    with override_settings(METRICS_TOKEN=TOKEN):
        response = client.get("/metrics", **extra)

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"jiraconnect_" not in response.content


def test_metrics_from_an_address_outside_the_allow_list_are_forbidden(client: Client) -> None:
    with override_settings(METRICS_ALLOWED_IPS=["10.0.0.0/8"]):
        outside = client.get("/metrics", REMOTE_ADDR="192.0.2.7")
        inside = client.get("/metrics", REMOTE_ADDR="10.1.2.3")

    assert outside.status_code == 403
    assert inside.status_code == 200


def test_with_both_configured_both_must_match(client: Client) -> None:
    with override_settings(METRICS_TOKEN=TOKEN, METRICS_ALLOWED_IPS=["127.0.0.1/32"]):
        no_token = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
        wrong_address = client.get("/metrics", REMOTE_ADDR="192.0.2.7", **BEARER)
        both = client.get("/metrics", REMOTE_ADDR="127.0.0.1", **BEARER)

    assert (no_token.status_code, wrong_address.status_code, both.status_code) == (401, 403, 200)


def test_metrics_refuse_post(client: Client) -> None:
    with override_settings(METRICS_TOKEN=TOKEN):
        assert client.post("/metrics", **BEARER).status_code == 405


# --- What they report -------------------------------------------------------------------------


def test_connections_are_reported_by_status_and_failing_ones_by_reason(
    client: Client, alice: User, make_connection: ConnectionFactory
) -> None:
    make_connection(alice)
    make_connection(alice, status=ConnectionStatus.REFRESH_FAILING, status_reason="rate_limited")
    make_connection(alice, status=ConnectionStatus.REFRESH_FAILING, status_reason="transient")
    make_connection(alice, status=ConnectionStatus.NEEDS_RECONNECT, status_reason="grant_revoked")

    found = scrape(client)

    assert found[("jiraconnect_connections", (("status", "active"),))] == 1
    assert found[("jiraconnect_connections", (("status", "refresh_failing"),))] == 2
    assert found[("jiraconnect_connections", (("status", "needs_reconnect"),))] == 1
    assert found[("jiraconnect_connections_failing", (("reason", "rate_limited"),))] == 1


def test_sites_with_webhooks_are_reported_by_the_state_of_their_worst_webhook(
    client: Client, alice: User, make_connection: ConnectionFactory
) -> None:
    now = clock.now()
    live, expired, pending = (
        only_site(make_connection(alice, account_id=f"acc-{n}", sites=[(f"c{n}", f"https://s{n}.net", "S")]))
        for n in range(3)
    )
    add_webhooks(live, ids=(1, 2), expires_at=now + timedelta(days=25))
    add_webhooks(expired, ids=(3, 4), expires_at=now - timedelta(minutes=1))
    add_webhooks(pending, ids=(5, None), expires_at=now + timedelta(days=25))

    found = scrape(client)

    assert {state: found[("jiraconnect_webhook_sites", (("state", state),))] for state in Health} == {
        "live": 1,
        "pending": 1,
        "failing": 0,
        "expired": 1,
    }


def test_refresh_outcomes_and_latency_come_from_every_process_via_the_database(
    client: Client, monkeypatch: pytest.MonkeyPatch, db: None
) -> None:
    install_clock(monkeypatch)
    # As two processes would: each flushes its own buffer into the same rows.
    for _ in range(2):
        recorder.count_event(kind=Kind.REFRESH, outcome="refreshed", source="scheduled", value=3)
        recorder.count_event(kind=Kind.REFRESH, outcome="transient_failure", reason="rate_limited", source="on_demand")
        recorder.token_latency_add(seconds=0.2, source="scheduled")
        recorder.flush()

    found = scrape(client)

    refreshed = (("outcome", "refreshed"), ("reason", ""), ("source", "scheduled"))
    failing = (("outcome", "transient_failure"), ("reason", "rate_limited"), ("source", "on_demand"))
    assert found[("jiraconnect_refresh_total", refreshed)] == 6
    assert found[("jiraconnect_refresh_total", failing)] == 2
    assert found[("jiraconnect_token_endpoint_seconds_bucket", (("le", "0.1"), ("source", "scheduled")))] == 0
    assert found[("jiraconnect_token_endpoint_seconds_bucket", (("le", "0.25"), ("source", "scheduled")))] == 2
    assert found[("jiraconnect_token_endpoint_seconds_bucket", (("le", "+Inf"), ("source", "scheduled")))] == 2
    assert found[("jiraconnect_token_endpoint_seconds_count", (("source", "scheduled"),))] == 2
    assert found[("jiraconnect_token_endpoint_seconds_sum", (("source", "scheduled"),))] == pytest.approx(0.4)


def test_refresh_counters_only_grow_when_old_days_are_pruned(
    client: Client, monkeypatch: pytest.MonkeyPatch, db: None
) -> None:
    frozen = install_clock(monkeypatch)
    recorder.count_event(kind=Kind.REFRESH, outcome="refreshed", source="scheduled", value=5)
    recorder.flush()
    frozen.advance(days=500)
    recorder.run_completed(now=frozen.now())

    found = scrape(client)

    assert (
        found[("jiraconnect_refresh_total", (("outcome", "refreshed"), ("reason", ""), ("source", "scheduled")))] == 5
    )


def test_the_last_runs_age_is_infinite_until_a_run_finishes(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    frozen = install_clock(monkeypatch)

    before = scrape(client)
    RunHeartbeat.objects.create(name=REFRESH_RUN, last_success_at=frozen.now() - timedelta(minutes=7))
    after = scrape(client)

    assert math.isinf(before[("jiraconnect_refresh_run_last_success_age_seconds", ())])
    assert after[("jiraconnect_refresh_run_last_success_age_seconds", ())] == 420
    assert (
        after[("jiraconnect_refresh_run_last_success_timestamp_seconds", ())]
        == (frozen.now() - timedelta(minutes=7)).timestamp()
    )


def test_a_wait_for_another_workers_refresh_is_observed(
    client: Client,
    alice: User,
    make_connection: ConnectionFactory,
    mocked: responses.RequestsMock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frozen = install_clock(monkeypatch)
    connection = make_connection(
        alice,
        access_token_expires_at=frozen.now() - timedelta(seconds=10),
        claim_id="6f1c3a52-0000-4000-8000-000000000001",
        claimed_until=frozen.now() + timedelta(seconds=1),
    )
    mocked.post(TOKEN_URL, json=token_reply(1))
    before = scrape(client)

    connection_access_token(connection_id=connection.pk)

    after = scrape(client)
    count, total = "jiraconnect_claim_wait_seconds_count", "jiraconnect_claim_wait_seconds_sum"
    assert after[(count, ())] - before[(count, ())] == 1
    # Polled until the other worker's lease had lapsed (past 1 s), then refreshed itself.
    assert after[(total, ())] - before[(total, ())] == pytest.approx(6 * CLAIM_POLL_SECONDS)


def test_no_token_or_secret_is_ever_in_the_metrics(
    client: Client, alice: User, make_connection: ConnectionFactory
) -> None:
    connection = make_connection(alice)

    with override_settings(METRICS_TOKEN=TOKEN):
        body = client.get("/metrics", **BEARER).content.decode()

    assert connection.access_token
    assert connection.access_token not in body
    assert connection.refresh_token
    assert connection.refresh_token not in body
    assert TOKEN not in body
    assert "test-client-secret-do-not-log" not in body


def test_a_process_without_multiprocess_mode_reports_its_own_metrics() -> None:
    assert not metrics.multiprocess_mode()
    assert b"jiraconnect_claim_wait_seconds" in metrics.exposition()


# --- Settings ---------------------------------------------------------------------------------


def test_metrics_settings_are_read_and_normalised(tmp_path: Path) -> None:
    env = {
        **production_env(tmp_path / "db.sqlite3"),
        "METRICS_TOKEN": TOKEN,
        "METRICS_ALLOWED_IPS": "10.0.0.7, 192.168.0.0/16,::1",
    }

    seen = settings_seen(env, "METRICS_TOKEN", "METRICS_ALLOWED_IPS")

    assert seen == {"METRICS_TOKEN": TOKEN, "METRICS_ALLOWED_IPS": ["10.0.0.7/32", "192.168.0.0/16", "::1/128"]}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("METRICS_TOKEN", "short"),
        ("METRICS_ALLOWED_IPS", "10.0.0.0/8,not-an-address"),
        ("PROMETHEUS_MULTIPROC_DIR", "/nonexistent/prometheus"),
        ("MONITORING_RETENTION_DAYS", "-1"),
        ("LOG_FORMAT", "xml"),
    ],
)
def test_malformed_monitoring_setting_fails_naming_it(tmp_path: Path, name: str, value: str) -> None:
    env = {**production_env(tmp_path / "db.sqlite3"), name: value}

    assert name in improperly_configured(manage("check", env=env))
