"""Registering a connection's webhooks per site, and keeping them registered."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

import pytest
import responses
from django.test import Client

from accounts.models import User
from integrations.lifecycle import webhooks
from integrations.lifecycle.webhooks import (
    EVENTS,
    connection_webhooks_sync,
    site_webhooks_sync,
    webhooks_maintain,
)
from integrations.models import JiraConnection, JiraSite, JiraWebhook, WebhookSlot, WebhookStatus
from tests.support.accounts import logged_in
from tests.support.atlassian import TOKEN_URL, token_reply
from tests.support.clock import FakeClock, install_clock
from tests.support.connections import ConnectionFactory
from tests.support.oauth import SITE_A, connect
from tests.support.webhooks import (
    ACCOUNT,
    CALLBACK_URL,
    CLOUD,
    SCOPES_WITH_WEBHOOKS,
    api,
    bodies,
    listed,
    only_site,
    page,
    registered,
    webhook_connection,
)

HOOKS = api(CLOUD, "webhook")
REFRESH = api(CLOUD, "webhook/refresh")
ASSIGNEE = f'assignee = "{ACCOUNT}"'
REPORTER = f'reporter = "{ACCOUNT}"'


@pytest.fixture(autouse=True)
def webhook_settings(settings: Any) -> Any:
    settings.ATLASSIAN_WEBHOOKS = True
    settings.ATLASSIAN_WEBHOOK_URL = CALLBACK_URL
    settings.ATLASSIAN_SCOPES = SCOPES_WITH_WEBHOOKS
    return settings


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    return install_clock(monkeypatch)


def rows(connection: JiraConnection) -> dict[str, JiraWebhook]:
    return {row.slot: row for row in JiraWebhook.objects.filter(connection=connection)}


def created(*ids: int) -> dict[str, Any]:
    return {"webhookRegistrationResult": [{"createdWebhookId": i} for i in ids]}


def test_registers_one_webhook_per_slot_covering_the_users_issues(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    connection = webhook_connection(make_connection, alice)
    mocked.get(HOOKS, json=page())
    mocked.post(HOOKS, json=created(1001, 1002))

    counts = site_webhooks_sync(site_id=only_site(connection).pk)

    assert counts.registered == 2
    assert bodies(mocked, "POST", HOOKS) == [
        {
            "url": CALLBACK_URL,
            "webhooks": [
                {"events": list(EVENTS), "jqlFilter": ASSIGNEE},
                {"events": list(EVENTS), "jqlFilter": REPORTER},
            ],
        }
    ]
    found = rows(connection)
    assert found[WebhookSlot.ASSIGNEE].webhook_id == 1001
    assert found[WebhookSlot.REPORTER].webhook_id == 1002
    assert {r.status for r in found.values()} == {WebhookStatus.ACTIVE}
    assert {r.expires_at for r in found.values()} == {clock.now() + timedelta(days=30)}
    # Nothing in the supported subset is currentUser(): the filter names the account.
    assert all("currentUser" not in r.jql_filter for r in found.values())
    site = only_site(connection)
    assert site.webhooks_next_check_at == clock.now() + timedelta(days=1)
    assert site.webhooks_claim_id is None


def test_callback_url_comes_from_site_url_when_not_set(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, settings: Any
) -> None:
    settings.ATLASSIAN_WEBHOOK_URL = ""
    settings.SITE_URL = "https://portal.example.com"
    connection = webhook_connection(make_connection, alice)
    mocked.get(HOOKS, json=page())
    mocked.post(HOOKS, json=created(1, 2))

    site_webhooks_sync(site_id=only_site(connection).pk)

    assert bodies(mocked, "POST", HOOKS)[0]["url"] == "https://portal.example.com/integrations/jira/webhook/"


@pytest.mark.parametrize("site_url", ["http://portal.example.com", "ftp://portal.example.com"])
def test_a_callback_url_that_is_not_https_stops_the_run_and_registers_nothing(
    alice: User,
    make_connection: ConnectionFactory,
    mocked: responses.RequestsMock,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
    site_url: str,
) -> None:
    settings.ATLASSIAN_WEBHOOK_URL = ""
    settings.SITE_URL = site_url
    webhook_connection(make_connection, alice)

    counts = webhooks_maintain(now=webhooks.clock.now())

    assert counts.errors == 1
    assert len(mocked.calls) == 0
    assert "https callback URL" in caplog.text


def test_loopback_http_callback_url_is_accepted(settings: Any) -> None:
    settings.ATLASSIAN_WEBHOOK_URL = ""
    settings.SITE_URL = "http://127.0.0.1:8000"

    assert webhooks.callback_url() == "http://127.0.0.1:8000/integrations/jira/webhook/"


def test_per_webhook_errors_in_a_200_are_recorded_and_retried_with_backoff(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    connection = webhook_connection(make_connection, alice)
    site = only_site(connection)
    mocked.get(HOOKS, json=page())
    mocked.post(
        HOOKS,
        json={"webhookRegistrationResult": [{"createdWebhookId": 1001}, {"errors": ["The clause reporter is busy"]}]},
    )

    counts = site_webhooks_sync(site_id=site.pk)

    assert (counts.registered, counts.failed) == (1, 1)
    failing = rows(connection)[WebhookSlot.REPORTER]
    assert failing.status == WebhookStatus.FAILING
    assert "The clause reporter is busy" in failing.last_error
    assert failing.next_attempt_at == clock.now() + webhooks.BACKOFF_BASE
    assert rows(connection)[WebhookSlot.ASSIGNEE].status == WebhookStatus.ACTIVE
    assert only_site(connection).webhooks_next_check_at == failing.next_attempt_at

    # Before the backoff ends, the run leaves the site alone.
    assert webhooks_maintain(now=clock.now() + timedelta(minutes=1)).sites == 0
    # After it, only the failed one is registered again.
    clock.advance(minutes=6)
    mocked.replace(responses.GET, HOOKS, json=page(listed(1001, ASSIGNEE)))
    mocked.replace(responses.POST, HOOKS, json=created(1003))

    webhooks_maintain(now=clock.now())

    assert bodies(mocked, "POST", HOOKS)[-1]["webhooks"] == [{"events": list(EVENTS), "jqlFilter": REPORTER}]
    healed = rows(connection)[WebhookSlot.REPORTER]
    assert (healed.webhook_id, healed.status, healed.failure_count) == (1003, WebhookStatus.ACTIVE, 0)


def test_the_backoff_doubles_up_to_its_cap() -> None:
    assert [webhooks.backoff(n) for n in (1, 2, 3)] == [timedelta(minutes=m) for m in (5, 10, 20)]
    assert webhooks.backoff(50) == webhooks.BACKOFF_CAP


def test_the_five_per_site_limit_is_respected_and_said(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock
) -> None:
    connection = webhook_connection(make_connection, alice)
    # Four of this app's webhooks for this user that no row holds; deleting them fails.
    stale = [listed(n, f"project = OLD{n}") for n in range(1, 5)]
    mocked.get(HOOKS, json=page(*stale))
    mocked.delete(HOOKS, status=500)
    mocked.post(HOOKS, json=created(2001))

    counts = site_webhooks_sync(site_id=only_site(connection).pk)

    # One slot left: exactly one webhook asked for, the other told why not.
    assert [len(b["webhooks"]) for b in bodies(mocked, "POST", HOOKS)] == [1]
    assert (counts.registered, counts.failed) == (1, 1)
    over = rows(connection)[WebhookSlot.REPORTER]
    assert over.status == WebhookStatus.FAILING
    assert "5 webhooks per app, user and site" in over.last_error


def test_stale_webhooks_are_deleted_and_a_lost_registration_is_adopted(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock
) -> None:
    connection = webhook_connection(make_connection, alice)
    # 77: a registration whose answer was lost (same filter); 78: an old filter.
    mocked.get(HOOKS, json=page(listed(77, ASSIGNEE), listed(78, "project = OLD")))
    mocked.delete(HOOKS, status=202)
    mocked.post(HOOKS, json=created(2002))

    counts = site_webhooks_sync(site_id=only_site(connection).pk)

    assert (counts.adopted, counts.deleted, counts.registered) == (1, 1, 1)
    assert bodies(mocked, "DELETE", HOOKS) == [{"webhookIds": [78]}]
    assert bodies(mocked, "POST", HOOKS)[0]["webhooks"] == [{"events": list(EVENTS), "jqlFilter": REPORTER}]
    assert rows(connection)[WebhookSlot.ASSIGNEE].webhook_id == 77


def test_a_webhook_atlassian_no_longer_knows_is_registered_again(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    connection = webhook_connection(make_connection, alice)
    registered(connection, expires_at=clock.now() + timedelta(days=25))
    mocked.get(HOOKS, json=page(listed(1002, REPORTER)))  # 1001 is gone
    mocked.post(HOOKS, json=created(3001))

    counts = site_webhooks_sync(site_id=only_site(connection).pk)

    assert (counts.reregistered, counts.registered) == (1, 1)
    assert rows(connection)[WebhookSlot.ASSIGNEE].webhook_id == 3001
    assert rows(connection)[WebhookSlot.REPORTER].webhook_id == 1002


def test_webhooks_with_under_20_days_left_are_extended(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    connection = webhook_connection(make_connection, alice)
    registered(connection, expires_at=clock.now() + timedelta(days=19))
    mocked.get(HOOKS, json=page(listed(1001, ASSIGNEE, expires=None), listed(1002, REPORTER, expires=None)))
    mocked.put(REFRESH, json={"expirationDate": "2031-05-01T00:00:00.000+0000"})

    counts = site_webhooks_sync(site_id=only_site(connection).pk)

    assert counts.extended == 2
    assert bodies(mocked, "PUT", REFRESH) == [{"webhookIds": [1001, 1002]}]
    assert {r.expires_at.isoformat() for r in rows(connection).values() if r.expires_at} == {
        "2031-05-01T00:00:00+00:00"
    }
    assert all(r.last_extended_at == clock.now() for r in rows(connection).values())


def test_an_idle_connections_webhooks_wait_until_12_days_left_since_extending_buys_a_refresh(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    connection = webhook_connection(make_connection, alice, access_token_expires_at=clock.now() - timedelta(days=3))
    expiry = clock.now() + timedelta(days=13)
    registered(connection, expires_at=expiry)

    counts = site_webhooks_sync(site_id=only_site(connection).pk)

    # No token refresh, no Jira call: the look is put off to 12 days before expiry.
    assert len(mocked.calls) == 0
    assert counts.extended == 0
    assert only_site(connection).webhooks_next_check_at == clock.now() + timedelta(days=1)
    clock.current += timedelta(days=1, minutes=1)
    mocked.post(TOKEN_URL, json=token_reply(7, scope=" ".join(SCOPES_WITH_WEBHOOKS)))
    mocked.get(HOOKS, json=page(listed(1001, ASSIGNEE, expires=None), listed(1002, REPORTER, expires=None)))
    mocked.put(REFRESH, json={"expirationDate": "2031-05-01T00:00:00.000+0000"})

    counts = site_webhooks_sync(site_id=only_site(connection).pk)

    assert counts.extended == 2
    assert [call.request.url for call in mocked.calls].count(TOKEN_URL) == 1


def test_a_failed_extension_keeps_the_webhook_and_is_retried(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    connection = webhook_connection(make_connection, alice)
    expiry = clock.now() + timedelta(days=19)
    registered(connection, expires_at=expiry)
    millis = int(expiry.timestamp() * 1000)
    mocked.get(HOOKS, json=page(listed(1001, ASSIGNEE, expires=millis), listed(1002, REPORTER, expires=millis)))
    mocked.put(REFRESH, status=503)

    site_webhooks_sync(site_id=only_site(connection).pk)

    found = rows(connection)[WebhookSlot.ASSIGNEE]
    assert (found.webhook_id, found.status) == (1001, WebhookStatus.FAILING)
    assert "Could not extend" in found.last_error
    assert only_site(connection).webhooks_next_check_at == found.next_attempt_at


def test_atlassian_unreachable_marks_the_sites_webhooks_failing_not_the_connection(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock
) -> None:
    connection = webhook_connection(make_connection, alice)
    mocked.get(HOOKS, status=502)

    counts = site_webhooks_sync(site_id=only_site(connection).pk)

    assert counts.failed == 2
    assert {r.status for r in rows(connection).values()} == {WebhookStatus.FAILING}
    assert JiraConnection.objects.get(pk=connection.pk).status == "active"


def test_a_site_claimed_by_another_worker_is_left_alone(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    connection = webhook_connection(make_connection, alice)
    site = only_site(connection)
    JiraSite.objects.filter(pk=site.pk).update(webhooks_claimed_until=clock.now() + timedelta(minutes=1))

    counts = site_webhooks_sync(site_id=site.pk)

    assert counts.claimed_elsewhere == 1
    assert len(mocked.calls) == 0
    assert not JiraWebhook.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_register_each_webhook_once(make_connection: ConnectionFactory) -> None:
    user = User.objects.create_user("racer@example.com", "correct horse battery staple")
    connection = webhook_connection(make_connection, user)
    site_id = only_site(connection).pk
    inside = threading.Event()
    release = threading.Event()

    def slow_list(request: Any) -> tuple[int, dict[str, str], str]:
        inside.set()  # the first worker holds the claim while Atlassian "thinks"
        release.wait(5)
        return 200, {}, '{"isLast": true, "values": []}'

    results: list[Any] = []
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
        mocked.add_callback(responses.GET, HOOKS, callback=slow_list)
        mocked.post(HOOKS, json=created(1, 2))

        def work() -> None:
            try:
                results.append(site_webhooks_sync(site_id=site_id))
            finally:
                from django.db import connections

                connections.close_all()

        first = threading.Thread(target=work)
        first.start()
        assert inside.wait(5)
        second = threading.Thread(target=work)
        second.start()
        second.join(10)
        release.set()
        first.join(10)
        posts = bodies(mocked, "POST", HOOKS)

    assert sorted(r.claimed_elsewhere for r in results) == [0, 1]
    assert len(posts) == 1
    assert JiraWebhook.objects.filter(site_id=site_id).count() == 2


def test_connection_without_the_scope_gets_no_webhooks_and_costs_no_call(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    connection = webhook_connection(make_connection, alice, scopes=["read:jira-work", "read:me", "offline_access"])

    counts = webhooks_maintain(now=clock.now())

    assert counts.sites == 0
    assert len(mocked.calls) == 0
    assert not JiraWebhook.objects.exists()
    # Looked at again tomorrow, not at every run.
    assert only_site(connection).webhooks_next_check_at == clock.now() + timedelta(days=1)
    assert webhooks_maintain(now=clock.now() + timedelta(hours=1)).sites == 0


def test_webhooks_off_means_no_registration(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, settings: Any
) -> None:
    settings.ATLASSIAN_WEBHOOKS = False
    webhook_connection(make_connection, alice)

    counts = webhooks_maintain(now=webhooks.clock.now())

    assert counts.sites == 0
    assert len(mocked.calls) == 0


def test_connecting_with_the_scope_registers_at_once_with_the_configured_url_whatever_the_host(
    alice: User, mocked: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    client = logged_in(alice)
    client.defaults["HTTP_HOST"] = "localhost:8443"
    client.defaults["HTTP_X_FORWARDED_HOST"] = "evil.example"
    site_hooks = api(SITE_A["id"], "webhook")
    mocked.get(site_hooks, json=page())
    mocked.post(site_hooks, json=created(11, 12))
    grant = token_reply()
    grant["scope"] = " ".join(SCOPES_WITH_WEBHOOKS)

    response = connect(client, mocked, tokens=grant)

    assert response.status_code == 302
    assert bodies(mocked, "POST", site_hooks)[0]["url"] == CALLBACK_URL
    assert sorted(JiraWebhook.objects.values_list("webhook_id", flat=True)) == [11, 12]


def test_a_failing_registration_never_fails_the_connect(alice: User, mocked: responses.RequestsMock) -> None:
    client = logged_in(alice)
    mocked.get(api(SITE_A["id"], "webhook"), status=500)
    grant = token_reply()
    grant["scope"] = " ".join(SCOPES_WITH_WEBHOOKS)

    response = connect(client, mocked, tokens=grant)

    assert response.status_code == 302
    assert JiraConnection.objects.filter(user=alice).count() == 1
    assert set(JiraWebhook.objects.values_list("status", flat=True)) == {WebhookStatus.FAILING}


def test_disconnect_deletes_the_webhooks_at_atlassian(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    connection = webhook_connection(make_connection, alice)
    registered(connection, expires_at=clock.now() + timedelta(days=25))
    mocked.delete(HOOKS, status=202)

    response = logged_in(alice).post(f"/integrations/jira/connections/{connection.pk}/disconnect/")

    assert response.status_code == 302
    assert bodies(mocked, "DELETE", HOOKS) == [{"webhookIds": [1001, 1002]}]
    assert not JiraConnection.objects.filter(pk=connection.pk).exists()
    assert not JiraWebhook.objects.exists()


@pytest.mark.parametrize("failure", [{"status": 500}, {"body": ConnectionError("down")}])
def test_disconnect_goes_on_when_deleting_the_webhooks_fails(
    alice: User,
    make_connection: ConnectionFactory,
    mocked: responses.RequestsMock,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    failure: dict[str, Any],
) -> None:
    connection = webhook_connection(make_connection, alice)
    registered(connection, expires_at=clock.now() + timedelta(days=25))
    mocked.delete(HOOKS, **failure)

    with caplog.at_level(logging.WARNING):
        response = logged_in(alice).post(f"/integrations/jira/connections/{connection.pk}/disconnect/")

    assert response.status_code == 302
    assert not JiraConnection.objects.filter(pk=connection.pk).exists()
    assert "expire by themselves" in caplog.text


def test_connection_webhooks_sync_is_a_no_op_without_the_scope(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock
) -> None:
    connection = make_connection(alice)

    assert connection_webhooks_sync(connection_id=connection.pk).sites == 0
    assert len(mocked.calls) == 0


def test_no_token_or_secret_reaches_the_logs(
    alice: User,
    make_connection: ConnectionFactory,
    mocked: responses.RequestsMock,
    caplog: pytest.LogCaptureFixture,
    settings: Any,
) -> None:
    caplog.set_level(logging.DEBUG)
    connection = webhook_connection(make_connection, alice)
    mocked.get(HOOKS, status=401, json={"code": 401, "message": "Unauthorized; scope does not match"})

    site_webhooks_sync(site_id=only_site(connection).pk)
    Client().get("/")  # anything else that logs

    assert "reconnect it to get live updates" in rows(connection)[WebhookSlot.ASSIGNEE].last_error
    for secret in (connection.access_token or "", connection.refresh_token or "", settings.ATLASSIAN_CLIENT_SECRET):
        assert secret
        assert secret not in caplog.text
