"""A user's whole journey in a real browser: the live portal against the live sandbox."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from playwright.sync_api import expect

from integrations.models import JiraConnection
from sandbox.seed import ADA, SITES
from tests.support.browser import ADA_NAME, Journey, ada_open_issue_keys, off_the_browser_thread

pytestmark = pytest.mark.browser

SITE_NAMES = [site.name for site in SITES]


def connections_of(email: str) -> list[JiraConnection]:
    return off_the_browser_thread(
        lambda: list(JiraConnection.objects.filter(user__email=email).defer("access_token", "refresh_token"))
    )


def test_sign_up_connect_browse_issues_and_disconnect(journey: Journey) -> None:
    page = journey.page
    journey.sign_up("ada.portal@example.com")
    expect(page.locator("#connected-apps")).to_contain_text("Connect your Jira Cloud account")
    journey.shot("settings-before-connect")

    page.click("#connect-jira")
    expect(page.locator("#consent-title")).to_contain_text("is requesting access")
    expect(page.locator("#scopes")).to_contain_text("offline_access")
    journey.consent(account_name=ADA_NAME, decision="Accept")

    expect(page.locator(".messages")).to_contain_text(f"Connected Jira as {ADA_NAME}.")
    card = page.locator("article.connection")
    expect(card).to_have_count(1)
    expect(card).to_have_attribute("data-status", "active")
    expect(card.locator("h3")).to_have_text(f"Jira · {ADA_NAME}")
    expect(card.locator("table.sites tbody tr")).to_have_count(len(SITES))
    for name in SITE_NAMES:
        expect(card.locator("table.sites")).to_contain_text(f"https://{name}.atlassian.net")
    # Offline too: the sandbox serves the avatar its /me names, and the portal keeps it.
    journey.assert_avatar_loaded(card.locator(".account"))
    journey.shot("connected")
    journey.snapshot_database("connected")

    page.get_by_role("link", name="My Jira").click()
    page.wait_for_url(journey.portal.url + "/jira/")
    expect(page.locator("td.key").first).to_be_visible()
    journey.assert_avatar_loaded(page.locator(".my-jira-connection .account"))
    journey.shot("my-jira")
    shown = [key.strip() for key in page.locator("td.key").all_inner_texts()]
    for project, expected in ada_open_issue_keys().items():
        on_page = [key for key in shown if key.startswith(project + "-")]
        # Only Ada's open issues, newest first: a page of them, not any other order or issue.
        assert on_page, f"no {project} issues on My Jira"
        assert on_page == expected[: len(on_page)]

    page.get_by_role("link", name="Settings").click()
    page.get_by_role("link", name="Disconnect…").click()
    expect(page.locator("h1")).to_contain_text(f"Disconnect {ADA_NAME}?")
    journey.shot("disconnect-confirm")
    page.click("#confirm-disconnect")
    page.wait_for_url(journey.portal.url + "/settings/")
    expect(page.locator(".messages")).to_contain_text("id.atlassian.com")
    expect(page.locator("article.connection")).to_have_count(0)
    journey.shot("disconnected")
    assert connections_of("ada.portal@example.com") == []
    journey.assert_no_issued_secret_leaked()
    assert journey.blocked == [], "the journey needed the network"


def test_declining_consent_leaves_no_connection(journey: Journey) -> None:
    page = journey.page
    journey.sign_up("decliner@example.com")
    page.click("#connect-jira")
    journey.consent(account_name=ADA_NAME, decision="Decline")

    expect(page.locator(".messages")).to_contain_text("You declined to connect Jira")
    expect(page.locator("article.connection")).to_have_count(0)
    journey.shot("declined")
    assert connections_of("decliner@example.com") == []
    assert journey.portal.sandbox.counters()["requests"].get("token", 0) == 0
    journey.assert_no_issued_secret_leaked()


def test_revoked_grant_shows_reconnect_banner_and_reconnect_restores_it(journey: Journey, mailoutbox: list) -> None:
    page = journey.page
    email = "revoked@example.com"
    journey.sign_up(email)
    page.click("#connect-jira")
    journey.consent(account_name=ADA_NAME, decision="Accept")
    expect(page.locator("article.connection")).to_have_attribute("data-status", "active")
    journey.shot("connected")
    journey.snapshot_database("connected")
    [connection] = connections_of(email)

    # The user removes the app at id.atlassian.com; the portal learns it on the next refresh
    # of a connection in use (the scheduled run refreshes warm connections only).
    assert journey.portal.sandbox.control("revoke", {"account_id": ADA})["revoked"] is True
    off_the_browser_thread(
        # Used today (the run keeps used connections warm), its token expired.
        lambda: JiraConnection.objects.filter(pk=connection.pk).update(
            access_token_expires_at=timezone.now() - timedelta(minutes=1), last_used_at=timezone.now()
        )
    )
    out = StringIO()
    off_the_browser_thread(lambda: call_command("refresh_tokens", "--ignore-backoff", "--json", stdout=out))
    assert json.loads(out.getvalue())["needs_reconnect"] == 1
    [connection] = connections_of(email)
    assert connection.status == "needs_reconnect"
    assert [mail.to for mail in mailoutbox] == [[email]]
    journey.snapshot_database("needs-reconnect")

    page.reload()
    banner = page.locator(f"#reconnect-banner-{connection.pk}")
    expect(banner).to_contain_text("This connection needs to be reconnected.")
    expect(page.locator("article.connection")).to_have_attribute("data-status", "needs_reconnect")
    journey.shot("reconnect-banner")

    banner.get_by_role("button", name="Reconnect").click()
    journey.consent(account_name=ADA_NAME, decision="Accept", step="consent-again")
    expect(page.locator(".messages")).to_contain_text(f"Reconnected Jira as {ADA_NAME}.")
    expect(page.locator("article.connection")).to_have_attribute("data-status", "active")
    expect(page.locator("[id^=reconnect-banner-]")).to_have_count(0)
    journey.shot("reconnected")

    [restored] = connections_of(email)
    assert restored.pk == connection.pk
    assert restored.status == "active"
    assert restored.account_id == ADA
    journey.assert_no_issued_secret_leaked(also={"mail": f"{mailoutbox[0].subject}\n{mailoutbox[0].body}"})
