"""Webhook health where people look: the settings page (with the scope-drift reconnect
prompt) and the support admin (inline, and filters for what needs attention)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client

from accounts.models import User
from integrations import clock
from integrations.models import JiraConnection, JiraSite, JiraWebhook, WebhookSlot, WebhookStatus
from tests.support.accounts import login_verified
from tests.support.connections import ConnectionFactory
from tests.support.webhooks import SCOPES_WITH_WEBHOOKS, only_site, registered, webhook_connection

SETTINGS_PAGE = "/settings/"
OLD_SCOPES = ["read:jira-work", "read:jira-user", "read:me", "offline_access"]
ADMIN_LIST = "/admin/integrations/jiraconnection/"


@pytest.fixture(autouse=True)
def webhooks_configured(settings: Any) -> None:
    settings.ATLASSIAN_WEBHOOKS = True
    settings.ATLASSIAN_SCOPES = SCOPES_WITH_WEBHOOKS


def page_for(user: User) -> str:
    client = Client()
    client.force_login(user)
    response = client.get(SETTINGS_PAGE)
    assert response.status_code == 200
    return response.content.decode()


def health_cell(html: str, connection: JiraConnection) -> str:
    marker = f'id="webhook-health-{only_site(connection).pk}"'
    return html.split(marker, 1)[1].split("</td>", 1)[0]


def test_settings_shows_registered_webhooks_with_expiry_and_last_delivery(
    alice: User, make_connection: ConnectionFactory
) -> None:
    connection = webhook_connection(make_connection, alice)
    expiry = clock.now() + timedelta(days=25)
    registered(connection, expires_at=expiry)
    JiraWebhook.objects.filter(slot=WebhookSlot.ASSIGNEE).update(last_delivery_at=clock.now() - timedelta(hours=1))

    cell = health_cell(page_for(alice), connection)

    assert 'data-health="live"' in page_for(alice)
    assert "Live updates on" in cell
    assert f"Expires {expiry:%Y-%m-%d %H:%M} UTC" in cell
    assert f"Last delivery: {clock.now() - timedelta(hours=1):%Y-%m-%d %H:%M} UTC" in cell


def test_settings_shows_the_last_error_and_the_next_try(alice: User, make_connection: ConnectionFactory) -> None:
    connection = webhook_connection(make_connection, alice)
    registered(connection, expires_at=clock.now() + timedelta(days=25))
    retry = clock.now() + timedelta(minutes=10)
    JiraWebhook.objects.filter(slot=WebhookSlot.REPORTER).update(
        status=WebhookStatus.FAILING, last_error="Jira refused the webhook: <b>clause</b>", next_attempt_at=retry
    )

    cell = health_cell(page_for(alice), connection)

    assert "Failing, retrying" in cell
    assert "Jira refused the webhook: &lt;b&gt;clause&lt;/b&gt;" in cell
    assert f"next try {retry:%Y-%m-%d %H:%M} UTC" in cell


def test_an_expired_webhook_is_shown_as_expired(alice: User, make_connection: ConnectionFactory) -> None:
    connection = webhook_connection(make_connection, alice)
    registered(connection, expires_at=clock.now() - timedelta(minutes=1))

    assert "Expired" in health_cell(page_for(alice), connection)


def test_a_site_not_yet_registered_says_so(alice: User, make_connection: ConnectionFactory) -> None:
    connection = webhook_connection(make_connection, alice)

    assert "Registering shortly" in health_cell(page_for(alice), connection)


def test_a_connection_granted_before_webhooks_is_asked_to_reconnect(
    alice: User, make_connection: ConnectionFactory
) -> None:
    connection = webhook_connection(make_connection, alice, scopes=OLD_SCOPES)

    html = page_for(alice)

    banner = html.split(f'id="scope-drift-{connection.pk}"', 1)[1].split("</div>", 1)[0]
    assert "Reconnect to get live updates" in banner
    assert "Missing: manage:jira-webhook" in banner
    assert "Off: reconnect to turn on" in health_cell(html, connection)


def test_any_added_scope_asks_for_a_reconnect_the_same_way(
    alice: User, make_connection: ConnectionFactory, settings: Any
) -> None:
    settings.ATLASSIAN_SCOPES = [*SCOPES_WITH_WEBHOOKS, "write:jira-work"]
    connection = webhook_connection(make_connection, alice)

    html = page_for(alice)

    banner = html.split(f'id="scope-drift-{connection.pk}"', 1)[1].split("</div>", 1)[0]
    assert "Reconnect to grant new permissions" in banner
    assert "Missing: write:jira-work" in banner


def test_offline_access_unlisted_by_atlassian_is_not_drift(alice: User, make_connection: ConnectionFactory) -> None:
    granted = [scope for scope in SCOPES_WITH_WEBHOOKS if scope != "offline_access"]
    connection = webhook_connection(make_connection, alice, scopes=granted)

    assert f'id="scope-drift-{connection.pk}"' not in page_for(alice)


def test_no_prompt_when_the_connection_has_every_configured_scope(
    alice: User, make_connection: ConnectionFactory
) -> None:
    connection = webhook_connection(make_connection, alice)

    assert f'id="scope-drift-{connection.pk}"' not in page_for(alice)


def test_with_webhooks_off_nothing_about_live_updates_is_shown(
    alice: User, make_connection: ConnectionFactory, settings: Any
) -> None:
    settings.ATLASSIAN_WEBHOOKS = False
    settings.ATLASSIAN_SCOPES = OLD_SCOPES
    connection = webhook_connection(make_connection, alice, scopes=OLD_SCOPES)

    html = page_for(alice)

    assert "webhook-health" not in html
    assert f'id="scope-drift-{connection.pk}"' not in html


def test_odd_webhook_rows_never_break_the_page(alice: User, make_connection: ConnectionFactory) -> None:
    connection = webhook_connection(make_connection, alice)
    JiraWebhook.objects.create(
        connection=connection, site=only_site(connection), slot=WebhookSlot.ASSIGNEE, status=WebhookStatus.FAILING
    )

    assert "Failing, retrying" in health_cell(page_for(alice), connection)


# --- Admin ------------------------------------------------------------------------------


@pytest.fixture
def support(staff: User) -> Client:
    client = Client()
    login_verified(client, staff)
    return client


def listed_ids(html: str) -> set[int]:
    return {int(pk) for pk in re.findall(r'name="_selected_action" value="(\d+)"', html)}


def test_admin_filters_connections_with_unhealthy_webhooks(
    support: Client, alice: User, bob: User, make_connection: ConnectionFactory
) -> None:
    healthy = webhook_connection(make_connection, alice)
    registered(healthy, expires_at=clock.now() + timedelta(days=25))
    failing = webhook_connection(make_connection, bob, sites=[("cloud-b", "https://b.atlassian.net", "B")])
    registered(failing, ids=(7, 8), expires_at=clock.now() + timedelta(days=25))
    JiraWebhook.objects.filter(webhook_id=7).update(status=WebhookStatus.FAILING, last_error="boom")
    expiring = webhook_connection(
        make_connection, bob, account_id="557058:bob-2", sites=[("cloud-c", "https://c.atlassian.net", "C")]
    )
    registered(expiring, ids=(9, 10), expires_at=clock.now() + timedelta(days=3))

    html = support.get(ADMIN_LIST, {"webhooks": "unhealthy"}).content.decode()

    assert listed_ids(html) == {failing.pk, expiring.pk}


def test_admin_filters_connections_missing_configured_scopes(
    support: Client, alice: User, bob: User, make_connection: ConnectionFactory
) -> None:
    webhook_connection(make_connection, alice)
    old = webhook_connection(make_connection, bob, scopes=OLD_SCOPES)

    html = support.get(ADMIN_LIST, {"scopes": "missing"}).content.decode()

    assert listed_ids(html) == {old.pk}


def test_admin_connection_page_shows_each_webhooks_health(
    support: Client, alice: User, make_connection: ConnectionFactory
) -> None:
    connection = webhook_connection(make_connection, alice, scopes=OLD_SCOPES)
    registered(connection, expires_at=clock.now() + timedelta(days=25))
    JiraWebhook.objects.filter(webhook_id=1002).update(status=WebhookStatus.FAILING, last_error="Jira said no")

    html = support.get(f"{ADMIN_LIST}{connection.pk}/change/").content.decode()

    assert "Jira webhooks (kept alive by refresh_tokens)" in html
    assert "1001" in html
    assert "Jira said no" in html
    assert "manage:jira-webhook (the user is asked to reconnect)" in html
    assert connection.access_token is not None
    assert connection.access_token not in html


# --- The rule, in Python and in SQL -----------------------------------------------------

# One webhook's possible states: (webhook_id, status, expires in days; None = no expiry).
ROW_KINDS = {
    "live": (11, WebhookStatus.ACTIVE, 25),
    "pending": (None, WebhookStatus.PENDING, None),
    "failing": (12, WebhookStatus.FAILING, 25),
    "failing, never registered": (None, WebhookStatus.FAILING, None),
    "expired": (13, WebhookStatus.ACTIVE, -1),
    "expired and failing": (14, WebhookStatus.FAILING, -1),
}


def test_fleet_counts_in_sql_agree_with_each_sites_health(alice: User, make_connection: ConnectionFactory) -> None:
    from collections import Counter
    from itertools import combinations_with_replacement

    from integrations.webhook_health import Health, sites_by_health, webhook_health

    now = clock.now()
    connection = make_connection(alice, scopes=SCOPES_WITH_WEBHOOKS, sites=[])
    pairs = list(combinations_with_replacement(ROW_KINDS, 2))
    for n, pair in enumerate(pairs):
        site = JiraSite.objects.create(connection=connection, cloud_id=f"c{n}", url=f"https://s{n}.atlassian.net")
        for slot, kind in zip((WebhookSlot.ASSIGNEE, WebhookSlot.REPORTER), pair, strict=True):
            webhook_id, status, days = ROW_KINDS[kind]
            JiraWebhook.objects.create(
                connection=connection,
                site=site,
                slot=slot,
                webhook_id=None if webhook_id is None else webhook_id * 100 + n,
                status=status,
                expires_at=None if days is None else now + timedelta(days=days),
            )

    expected = Counter(
        health.state
        for site in JiraSite.objects.filter(connection=connection).prefetch_related("webhooks")
        if (health := webhook_health(webhooks=site.webhooks.all(), now=now)) is not None
    )

    assert sites_by_health(now=now) == {state: expected[state] for state in Health}
    # Every state is reached, so a rule that drifted in one place would show.
    assert all(expected[state] for state in Health)
    assert sum(expected.values()) == len(pairs) == 21
