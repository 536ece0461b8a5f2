"""Sixty simulated days of the scheduled run against a Jira that expires webhooks after
30 days and forgets them silently: no webhook ever expires, a forgotten one comes back,
and keeping them alive costs an idle connection no extra token refreshes."""

from __future__ import annotations

import itertools
import json
from datetime import timedelta
from typing import Any

import pytest
import responses
from django.core.management import call_command

from accounts.models import User
from integrations.lifecycle.run import RunOptions, refresh_due
from integrations.models import JiraWebhook, WebhookStatus
from tests.support.atlassian import TOKEN_URL, token_reply
from tests.support.clock import install_clock
from tests.support.connections import ConnectionFactory
from tests.support.webhooks import (
    CALLBACK_URL,
    CLOUD,
    SCOPES_WITH_WEBHOOKS,
    FakeJiraWebhooks,
    webhook_connection,
)

STEP = timedelta(hours=6)
DAYS = 60


@pytest.fixture(autouse=True)
def webhook_settings(settings: Any) -> None:
    settings.ATLASSIAN_WEBHOOKS = True
    settings.ATLASSIAN_WEBHOOK_URL = CALLBACK_URL
    settings.ATLASSIAN_SCOPES = SCOPES_WITH_WEBHOOKS


def test_sixty_days_of_scheduled_runs_never_let_a_webhook_expire(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = install_clock(monkeypatch)
    # An idle connection: nobody has called Jira with it for weeks.
    connection = webhook_connection(
        make_connection, alice, last_used_at=clock.now() - timedelta(days=20), tokens_issued_at=clock.now()
    )
    jira = FakeJiraWebhooks(now=clock.now)
    jira.install(mocked, CLOUD)
    serial = itertools.count(1)
    mocked.add_callback(
        responses.POST,
        TOKEN_URL,
        callback=lambda request: (200, {}, json.dumps(token_reply(next(serial), scope=" ".join(SCOPES_WITH_WEBHOOKS)))),
    )
    extended = registered = 0
    forgotten_at = clock.now() + timedelta(days=33)
    forgotten = False
    end = clock.now() + timedelta(days=DAYS)

    while clock.now() < end:
        summary = refresh_due(RunOptions())
        assert summary.exit_code == 0, summary.as_dict()
        extended += summary.webhooks.extended
        registered += summary.webhooks.registered
        alive = jira.sites.get(CLOUD, {})
        # Every webhook Jira knows has days left, at every run.
        assert all(expires > clock.now() + timedelta(days=5) for _jql, _events, expires in alive.values())
        if not forgotten and clock.now() >= forgotten_at:
            jira.forget(CLOUD, min(alive))
            forgotten = True
        clock.current += STEP

    assert jira.expired == 0
    rows = list(JiraWebhook.objects.filter(connection=connection))
    assert {row.status for row in rows} == {WebhookStatus.ACTIVE}
    assert {row.webhook_id for row in rows} == set(jira.sites[CLOUD])
    assert all(row.expires_at is not None and row.expires_at > clock.now() for row in rows)
    assert registered == 3  # two at the start, one after Jira forgot it
    # Both of them at about days 18 and 36 and 54, less the one Jira forgot (registered anew).
    assert extended >= 5
    # The cost: an idle connection's webhooks are looked at when they need extending (12
    # days left: every 18 days), not daily; each look refreshes the token once, that
    # refresh is also its keep-alive, and nothing keeps the connection warm.
    token_calls = sum(1 for call in mocked.calls if call.request.url == TOKEN_URL)
    assert jira.calls["GET"] <= 4, jira.calls
    assert token_calls <= DAYS // 18, token_calls


def test_the_run_reports_what_it_did_to_webhooks(
    alice: User,
    make_connection: ConnectionFactory,
    mocked: responses.RequestsMock,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = install_clock(monkeypatch)
    webhook_connection(make_connection, alice, access_token_expires_at=clock.now() + timedelta(hours=1))
    FakeJiraWebhooks(now=clock.now).install(mocked, CLOUD)

    call_command("refresh_tokens", "--json")  # exit status 0: no SystemExit

    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["webhooks_registered"] == 2
    assert report["webhooks_failed"] == 0
    assert "jira_events_pruned" in report
