"""Live Jira activity in a real browser: the portal registers its webhooks at the sandbox,
the user changes an issue on the sandbox's issue page, and the signed delivery reaches the
live portal."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests
from django.urls import reverse
from playwright.sync_api import expect

from integrations.models import JiraEvent, JiraSite
from sandbox.seed import ACME, ADA, GRACE, SITES
from sandbox.testing import deliveries, sandbox_webhooks
from tests.support.browser import ADA_NAME, Journey, ada_open_issue_keys, off_the_browser_thread
from tests.support.webhooks import SCOPES_WITH_WEBHOOKS, token

pytestmark = pytest.mark.browser

GRACE_NAME = "Grace Hopper"
# A delivery is one POST to the live server: far less than this, unless it failed.
DELIVERY_SETTLE_SECONDS = 10.0


@pytest.fixture
def webhook_url(live_server: Any, settings: Any) -> str:
    """Webhooks on, their scope requested, deliveries sent to the live portal's receiver."""
    url = live_server.url + reverse("jira-webhook")
    settings.ATLASSIAN_WEBHOOKS = True
    settings.ATLASSIAN_SCOPES = SCOPES_WITH_WEBHOOKS
    settings.ATLASSIAN_WEBHOOK_URL = url
    return url


def test_issue_changed_in_the_sandbox_shows_on_my_jira_after_one_reload(journey: Journey, webhook_url: str) -> None:
    """Connect with manage:jira-webhook: the portal registers its webhooks at once. Change an
    issue on the sandbox's issue page: the sandbox delivers a signed event to the live portal
    and, after one reload of My Jira, the site's "Recent activity" lists it as new and the
    issue's row is marked changed. A delivery signed with another key gets 401 and stores
    nothing; disconnecting deletes the webhooks at the sandbox."""
    page = journey.page
    sandbox = journey.portal.sandbox
    email = "live.ada@example.com"
    # 64 characters, like Atlassian's: the receiver verifies with it, and PyJWT is silent.
    assert len(sandbox.config.client_secret) == 64

    journey.sign_up(email)
    page.click("#connect-jira")
    expect(page.locator("li[data-scope='manage:jira-webhook']")).to_contain_text("Jira webhooks")
    journey.consent(account_name=ADA_NAME, decision="Accept")
    expect(page.locator(".messages")).to_contain_text(f"Connected Jira as {ADA_NAME}.")
    sites = off_the_browser_thread(
        lambda: {site.cloud_id: site for site in JiraSite.objects.filter(connection__user__email=email)}
    )
    assert set(sites) == {site.cloud_id for site in SITES}
    for site in sites.values():
        expect(page.locator(f"#webhook-health-{site.pk}")).to_have_attribute("data-health", "live")
    journey.shot("connected-live")

    # Registered during the callback: the assignee and reporter webhooks on each site.
    registered = [hook for hook in sandbox_webhooks(sandbox) if hook["account_id"] == ADA]
    assert sorted(hook["site_id"] for hook in registered) == sorted([site.cloud_id for site in SITES] * 2)
    assert {hook["url"] for hook in registered} == {webhook_url}

    acme = sites[ACME]
    page.get_by_role("link", name="My Jira").click()
    page.wait_for_url(journey.portal.url + "/jira/")
    activity = page.locator(f"#activity-{acme.pk}")
    expect(activity).to_contain_text("Nothing yet.")
    expect(page.locator("tr[data-changed=true]")).to_have_count(0)
    journey.shot("my-jira-before")

    # In a second tab, as a user with the sandbox open next to the portal.
    key = ada_open_issue_keys()["ACME"][0]
    summary = f"Live from the sandbox {uuid.uuid4().hex[:8]}"
    sandbox_tab = page.context.new_page()
    sandbox_tab.goto(f"{sandbox.base_url}/_sandbox/issues?site=acme")
    row = sandbox_tab.locator(f"tr[id='{key}']")
    row.get_by_label(f"Summary of {key}").fill(summary)
    row.get_by_label("Changed by").select_option(GRACE)
    row.get_by_role("button", name="Save").click()
    sandbox_tab.wait_for_url(f"{sandbox.base_url}/_sandbox/issues?site=acme#{key}")
    expect(sandbox_tab.locator(f"tr[id='{key}']").get_by_label(f"Summary of {key}")).to_have_value(summary)
    sandbox_tab.screenshot(path=str(journey.folder / "sandbox-issue-changed.png"), full_page=True)

    # The sandbox's log says when the live server has answered: no sleeping on the clock.
    [sent] = deliveries(sandbox, settle=DELIVERY_SETTLE_SECONDS)
    assert (sent["event"], sent["issue_key"], sent["url"]) == ("jira:issue_updated", key, webhook_url)
    assert (sent["status"], [a["outcome"] for a in sent["attempts"]]) == ("delivered", ["200"])
    stored = off_the_browser_thread(lambda: list(JiraEvent.objects.values_list("site_id", "issue_key", "event_type")))
    assert stored == [(acme.pk, key, "jira:issue_updated")]

    page.bring_to_front()
    page.reload()
    new = page.locator(f"#activity-{acme.pk} li[data-new=true]")
    expect(new).to_have_count(1)
    expect(new).to_contain_text(f"{GRACE_NAME} updated {key}")
    expect(new).to_contain_text(summary)
    changed = page.locator(f"#site-{acme.pk} tr[data-changed=true]")
    expect(changed).to_have_count(1)
    expect(changed.locator("td.key")).to_contain_text(key)
    # The issue as it is now, not as the page cached it on the visit before.
    expect(changed).to_contain_text(summary)
    expect(page.locator("tr[data-changed=true]")).to_have_count(1)
    journey.shot("my-jira-after-one-reload")

    # Anyone can copy a delivery; only a JWT signed with our client secret is believed.
    forged = requests.post(
        webhook_url,
        json=sent["payload"],
        headers={
            "Authorization": f"Bearer {token(key='not-our-client-secret-' + 'x' * 42)}",
            "X-Atlassian-Webhook-Identifier": str(uuid.uuid4()),
        },
        timeout=10,
    )
    assert forged.status_code == 401
    assert off_the_browser_thread(JiraEvent.objects.count) == 1

    page.get_by_role("link", name="Settings").click()
    page.get_by_role("link", name="Disconnect…").click()
    page.click("#confirm-disconnect")
    page.wait_for_url(journey.portal.url + "/settings/")
    expect(page.locator("article.connection")).to_have_count(0)
    journey.shot("disconnected")
    assert [hook for hook in sandbox_webhooks(sandbox) if hook["account_id"] == ADA] == []
    journey.assert_no_issued_secret_leaked()
    assert journey.blocked == [], "the journey needed the network"
