"""Support opens the Connection health page in a real browser; other users cannot."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from accounts.models import User
from integrations.models import ConnectionStatus, JiraConnection, JiraSite, JiraWebhook, WebhookSlot, WebhookStatus
from monitoring.models import DailyCount, Kind
from tests.support.browser import PASSWORD, Journey, admin_sign_in, off_the_browser_thread

pytestmark = pytest.mark.browser

HEALTH = "/admin/monitoring/connectionhealth/"
STAFF_EMAIL = "support.health@example.com"


def seed_a_month() -> None:
    """Thirty days of refreshes with a rough patch, and a small fleet in every state."""
    today = timezone.now().date()
    rows = []
    for age in range(30):
        day = today - timedelta(days=age)
        rows.append(DailyCount(day=day, kind=Kind.REFRESH, outcome="refreshed", source="scheduled", value=90 + age))
        if age in (3, 4, 5):
            rows += [
                DailyCount(day=day, kind=Kind.REFRESH, outcome="transient_failure", reason="rate_limited", value=4),
                DailyCount(day=day, kind=Kind.REFRESH, outcome="transient_failure", reason="transient", value=2),
            ]
        if age == 2:
            rows += [
                DailyCount(day=day, kind=Kind.REFRESH, outcome="recovered", source="scheduled", value=6),
                DailyCount(day=day, kind=Kind.REFRESH, outcome="needs_reconnect", reason="grant_revoked", value=1),
            ]
    DailyCount.objects.bulk_create(rows)
    User.objects.create_user(STAFF_EMAIL, PASSWORD, is_staff=True, is_superuser=True)
    owner = User.objects.create_user("fleet.owner@example.com", PASSWORD)
    now = timezone.now()
    for n, status in enumerate([ConnectionStatus.ACTIVE] * 5 + [ConnectionStatus.REFRESH_FAILING]):
        connection = JiraConnection.objects.create(
            user=owner,
            account_id=f"557058:fleet-{n}",
            account_name=f"Fleet {n}",
            status=status,
            status_reason="rate_limited" if status == ConnectionStatus.REFRESH_FAILING else "",
            tokens_issued_at=now,
            first_consented_at=now - timedelta(days=350 if n == 0 else 10),
        )
        if n < 2:
            # One site live, one whose webhooks are close to expiry: extension is failing.
            site = JiraSite.objects.create(
                connection=connection, cloud_id=f"c{n}", name=f"Site {n}", url=f"https://s{n}.net"
            )
            JiraWebhook.objects.create(
                connection=connection,
                site=site,
                slot=WebhookSlot.ASSIGNEE,
                webhook_id=100 + n,
                status=WebhookStatus.ACTIVE if n == 0 else WebhookStatus.FAILING,
                expires_at=now + timedelta(days=25 if n == 0 else 2),
                last_error="" if n == 0 else "Jira answered 503",
            )


def test_staff_sees_the_health_charts_and_tables(journey: Journey) -> None:
    off_the_browser_thread(seed_a_month)
    page = journey.page

    admin_sign_in(page, journey.portal.url, email=STAFF_EMAIL, password=PASSWORD)
    page.goto(journey.portal.url + HEALTH)

    expect(page.locator("h1")).to_have_text("Connection health")
    charts = page.locator("svg.health-chart")
    expect(charts).to_have_count(2)
    expect(charts.first).to_be_visible()
    expect(charts.nth(1).locator("rect[fill^='url(#failures-f']").first).to_be_attached()
    expect(page.locator("#successes-table tbody tr")).to_have_count(30)
    expect(page.locator("#failures-table thead")).to_contain_text("Failing: rate_limited")
    expect(page.locator("#statuses")).to_contain_text("rate_limited: 1")
    expect(page.locator("#failing a")).to_have_count(1)
    expect(page.locator("#deadlines-table tbody tr")).to_have_count(1)
    expect(page.locator("#webhook-health-table tr[data-state=live] td")).to_have_text("1")
    expect(page.locator("#webhook-unhealthy-table tbody tr")).to_have_count(1)
    expect(page.locator("#webhook-unhealthy-table")).to_contain_text("Jira answered 503")
    journey.shot("health-30-days")

    page.get_by_role("link", name="last 90 days").click()
    expect(page.locator("#successes-table tbody tr")).to_have_count(90)
    journey.shot("health-90-days")

    page.locator("#failing a").click()
    expect(page.locator("h2").first).to_contain_text("Fleet 5")
    journey.shot("failing-connection")


def test_a_user_who_is_not_staff_gets_no_access(journey: Journey) -> None:
    page = journey.page
    journey.sign_up("not.staff@example.com")

    page.goto(journey.portal.url + HEALTH)

    page.wait_for_url("**/admin/login/**")
    expect(page.locator(".errornote")).to_contain_text("not authorized")
    expect(page.locator("svg.health-chart")).to_have_count(0)
    journey.shot("refused")
