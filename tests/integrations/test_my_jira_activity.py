"""My Jira's live part: the recent-activity panel per site and the "changed since your
last visit" marks, from deliveries the receiver stored."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
import responses
from django.test import Client

from accounts.models import User
from integrations.lifecycle.deliveries import jira_events_prune
from integrations.models import JiraConnection, JiraEvent, MyJiraVisit
from integrations.myjira.activity import ACTIVITY_SHOWN
from tests.integrations.test_my_jira import PAGE, issue, page, search_url
from tests.support.clock import FakeClock, install_clock
from tests.support.connections import ConnectionFactory
from tests.support.webhooks import (
    CLOUD,
    SCOPES_WITH_WEBHOOKS,
    delivery,
    only_site,
    post_delivery,
    registered,
    webhook_connection,
)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch, settings: Any) -> FakeClock:
    settings.ATLASSIAN_SCOPES = SCOPES_WITH_WEBHOOKS
    return install_clock(monkeypatch)


@pytest.fixture
def hooked(alice: User, make_connection: ConnectionFactory, clock: FakeClock) -> JiraConnection:
    connection = webhook_connection(make_connection, alice, access_token_expires_at=clock.now() + timedelta(days=400))
    registered(connection, expires_at=clock.now() + timedelta(days=25))
    return connection


@pytest.fixture
def browser(alice: User) -> Client:
    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def jira(mocked: responses.RequestsMock) -> responses.RequestsMock:
    mocked.post(search_url(CLOUD), json=page(issue("ACME-7", "Fix the login redirect"), issue("ACME-8", "Write docs")))
    return mocked


def changed_rows(html: str) -> list[str]:
    return re.findall(r'<tr class="changed" data-changed="true">\s*<td class="key"><a [^>]*>([A-Z]+-\d+)</a>', html)


def activity_items(html: str) -> list[str]:
    panel = html.split('class="activity-list"', 1)[1].split("</ul>", 1)[0] if "activity-list" in html else ""
    return [re.sub(r"\s+", " ", item).strip() for item in re.findall(r"<li[^>]*>(.*?)</li>", panel, re.S)]


def test_the_activity_panel_lists_received_events_newest_first(
    browser: Client, hooked: JiraConnection, jira: responses.RequestsMock, clock: FakeClock
) -> None:
    post_delivery(Client(), delivery([1001], key="ACME-7", actor="Grace Hopper"))
    clock.advance(minutes=1)
    post_delivery(Client(), delivery([1001], event="comment_created", key="ACME-8", actor="Alan Turing"))

    html = browser.get(PAGE).content.decode()

    items = activity_items(html)
    assert len(items) == 2
    assert "Alan Turing commented on" in items[0]
    assert "ACME-8" in items[0]
    assert "Grace Hopper updated" in items[1]
    assert f'id="activity-{only_site(hooked).pk}"' in html


def test_the_panel_shows_a_bounded_number_of_events(
    browser: Client, hooked: JiraConnection, jira: responses.RequestsMock, clock: FakeClock
) -> None:
    for n in range(ACTIVITY_SHOWN + 5):
        clock.advance(seconds=1)
        post_delivery(Client(), delivery([1001], key=f"ACME-{100 + n}"))

    items = activity_items(browser.get(PAGE).content.decode())

    assert len(items) == ACTIVITY_SHOWN
    assert f"ACME-{100 + ACTIVITY_SHOWN + 4}" in items[0]


def test_issues_changed_since_the_last_visit_are_marked_once(
    browser: Client, hooked: JiraConnection, jira: responses.RequestsMock, clock: FakeClock
) -> None:
    post_delivery(Client(), delivery([1001], key="ACME-8"))
    first = browser.get(PAGE).content.decode()
    clock.advance(minutes=5)
    post_delivery(Client(), delivery([1001], key="ACME-7", summary="Fix the login redirect, again"))
    clock.advance(minutes=5)

    second = browser.get(PAGE).content.decode()
    clock.advance(minutes=5)
    third = browser.get(PAGE).content.decode()

    # The first visit marks nothing: there is no "last visit" to count from.
    assert changed_rows(first) == []
    assert changed_rows(second) == ["ACME-7"]
    assert 'data-new="true"' in second
    assert "since your last visit" in second
    assert changed_rows(third) == []
    assert 'data-new="true"' not in third


def test_the_visit_is_kept_per_user_across_browsers(
    alice: User, hooked: JiraConnection, jira: responses.RequestsMock, clock: FakeClock
) -> None:
    laptop, phone = Client(), Client()
    laptop.force_login(alice)
    phone.force_login(alice)
    laptop.get(PAGE)
    clock.advance(minutes=1)
    post_delivery(Client(), delivery([1001], key="ACME-7"))
    clock.advance(minutes=1)

    assert changed_rows(phone.get(PAGE).content.decode()) == ["ACME-7"]
    assert MyJiraVisit.objects.get(user=alice).seen_at == clock.now()


def test_event_text_from_jira_is_escaped(
    browser: Client, hooked: JiraConnection, jira: responses.RequestsMock, clock: FakeClock
) -> None:
    post_delivery(Client(), delivery([1001], summary="<script>alert(1)</script>", actor="<b>Mallory</b>"))

    html = browser.get(PAGE).content.decode()

    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;Mallory&lt;/b&gt;" in html


def test_a_connection_without_the_scope_is_told_how_to_get_live_updates(
    browser: Client, alice: User, make_connection: ConnectionFactory, jira: responses.RequestsMock, clock: FakeClock
) -> None:
    connection = webhook_connection(make_connection, alice, scopes=["read:jira-work", "read:me", "offline_access"])

    html = browser.get(PAGE).content.decode()

    assert f'id="live-updates-off-{only_site(connection).pk}"' in html
    assert "Reconnect it in settings" in html


def test_a_live_site_without_events_says_they_will_appear(
    browser: Client, hooked: JiraConnection, jira: responses.RequestsMock
) -> None:
    html = browser.get(PAGE).content.decode()

    assert "appear here as they happen" in html


def test_with_webhooks_off_and_no_events_there_is_no_panel(
    browser: Client, hooked: JiraConnection, jira: responses.RequestsMock, settings: Any
) -> None:
    settings.ATLASSIAN_WEBHOOKS = False

    html = browser.get(PAGE).content.decode()

    assert 'class="activity"' not in html


def test_received_events_are_pruned_after_the_retention(
    hooked: JiraConnection, clock: FakeClock, settings: Any
) -> None:
    settings.WEBHOOK_EVENT_RETENTION_DAYS = 30
    post_delivery(Client(), delivery([1001], key="ACME-1"))
    clock.advance(days=20)
    post_delivery(Client(), delivery([1001], key="ACME-2"))
    clock.advance(days=11)

    assert jira_events_prune(now=clock.now()) == 1
    assert list(JiraEvent.objects.values_list("issue_key", flat=True)) == ["ACME-2"]


def test_a_stored_event_makes_the_next_load_fetch_its_site_again(
    browser: Client, hooked: JiraConnection, mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    mocked.post(search_url(CLOUD), json=page(issue("ACME-7", "Fix the login redirect")))
    browser.get(PAGE)
    mocked.replace(responses.POST, search_url(CLOUD), json=page(issue("ACME-7", "Fix the login redirect, again")))
    assert "Fix the login redirect, again" not in browser.get(PAGE).content.decode()  # cached
    clock.advance(minutes=1)

    post_delivery(Client(), delivery([1001], key="ACME-7", summary="Fix the login redirect, again"))
    html = browser.get(PAGE).content.decode()

    # The row marked changed shows the issue as it is now, not the copy cached before.
    assert changed_rows(html) == ["ACME-7"]
    assert re.search(r'data-changed="true">.*?<td>Fix the login redirect, again</td>', html, re.S)
