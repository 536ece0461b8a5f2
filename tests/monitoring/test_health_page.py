"""The admin's "Connection health" page: who may see it, what it shows, what it costs."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import connection as db
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from integrations.models import (
    CONSENT_LIFETIME,
    ConnectionStatus,
    JiraConnection,
    JiraSite,
    JiraWebhook,
    WebhookSlot,
    WebhookStatus,
)
from monitoring.models import DailyCount, Kind
from tests.support.accounts import login_verified
from tests.support.clock import FakeClock, install_clock
from tests.support.connections import ConnectionFactory
from tests.support.webhooks import add_webhooks

pytestmark = pytest.mark.django_db

PAGE = "/admin/monitoring/connectionhealth/"


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    return install_clock(monkeypatch)


@pytest.fixture
def staff_client(client: Client, staff: User) -> Client:
    login_verified(client, staff)
    return client


def staff_with(*codenames: str) -> User:
    user = User.objects.create_user("helpdesk@example.com", "helpdesk horse battery staple", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="integrations", codename__in=codenames))
    return user


def counted(day: date, outcome: str, value: int, *, reason: str = "", source: str = "scheduled") -> None:
    DailyCount.objects.create(day=day, kind=Kind.REFRESH, outcome=outcome, reason=reason, source=source, value=value)


def table_rows(html: str, table_id: str) -> list[list[str]]:
    """The cells of a table's body rows, tags stripped."""
    table = re.search(rf'<table id="{table_id}">(.*?)</table>', html, re.S)
    assert table is not None, table_id
    body = re.search(r"<tbody>(.*?)</tbody>", table[1], re.S)
    assert body is not None
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body[1], re.S)
    return [
        [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
        for row in rows
    ]


# --- Access ---------------------------------------------------------------------------------


def test_anonymous_and_non_staff_users_are_sent_to_the_admin_login(client: Client, alice: User) -> None:
    anonymous = client.get(PAGE)
    client.force_login(alice)
    signed_in = client.get(PAGE)

    for response in (anonymous, signed_in):
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


def test_staff_without_view_permission_on_connections_is_refused(client: Client) -> None:
    login_verified(client, staff_with())

    assert client.get(PAGE).status_code == 403
    assert PAGE not in client.get("/admin/").content.decode()


def test_staff_with_view_permission_sees_the_page_and_its_index_link(client: Client, frozen: FakeClock) -> None:
    login_verified(client, staff_with("view_jiraconnection"))

    assert client.get(PAGE).status_code == 200
    assert PAGE in client.get("/admin/").content.decode()


@pytest.mark.parametrize("days", ["7", "abc", "", "90x"])
def test_a_period_other_than_30_or_90_days_is_a_clear_error(staff_client: Client, days: str) -> None:
    response = staff_client.get(PAGE, {"days": days})

    assert response.status_code == 400
    assert response.content == b"days must be 30 or 90."


# --- Content ----------------------------------------------------------------------------------


def test_connections_are_counted_by_status_with_reasons(
    staff_client: Client, alice: User, make_connection: ConnectionFactory, frozen: FakeClock
) -> None:
    make_connection(alice)
    make_connection(alice)
    make_connection(alice, status=ConnectionStatus.REFRESH_FAILING, status_reason="rate_limited")
    make_connection(alice, status=ConnectionStatus.NEEDS_RECONNECT, status_reason="grant_revoked")

    html = staff_client.get(PAGE).content.decode()

    statuses = re.search(r'<section id="statuses">.*?</section>', html, re.S)
    assert statuses is not None
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", statuses[0]))
    assert "Active 2" in text
    assert "Failing (retrying) 1 rate_limited: 1" in text
    assert "Needs reconnect 1 grant_revoked: 1" in text
    assert "All 4" in text


def test_daily_outcomes_are_charted_and_tabled_for_30_and_90_days(staff_client: Client, frozen: FakeClock) -> None:
    today = frozen.now().date()
    counted(today, "refreshed", 40)
    counted(today, "refreshed", 5, source="on_demand")
    counted(today, "recovered", 2)
    counted(today - timedelta(days=1), "transient_failure", 3, reason="rate_limited")
    counted(today - timedelta(days=1), "needs_reconnect", 1, reason="grant_revoked")
    counted(today - timedelta(days=60), "refreshed", 7)

    month = staff_client.get(PAGE).content.decode()
    quarter = staff_client.get(PAGE, {"days": "90"}).content.decode()

    successes = table_rows(month, "successes-table")
    assert len(successes) == 30
    assert successes[0] == [str(today), "45", "2"]
    failures = table_rows(month, "failures-table")
    assert failures[1] == [str(today - timedelta(days=1)), "3", "1", "0"]
    assert "Failing: rate_limited" in month
    assert len(table_rows(quarter, "successes-table")) == 90
    assert [str(today - timedelta(days=60)), "7", "0"] in table_rows(quarter, "successes-table")
    assert [str(today - timedelta(days=60)), "7", "0"] not in successes
    sources = table_rows(month, "sources-table")
    assert ["On demand (Jira calls)", "5", "0", "0", "0", "0"] in sources
    assert ["Scheduled run", "40", "2", "3", "1", "0"] in sources


def test_charts_are_inline_svg_readable_without_colour_or_script(staff_client: Client, frozen: FakeClock) -> None:
    today = frozen.now().date()
    counted(today, "refreshed", 10)
    counted(today, "recovered", 1)

    html = staff_client.get(PAGE).content.decode()

    charts = re.findall(r"<svg [^>]*class=\"health-chart\".*?</svg>", html, re.S)
    assert len(charts) == 2
    successes = charts[0]
    assert 'role="img"' in successes
    # The second series is told apart by a pattern, not only by colour, and named in the legend.
    assert '<pattern id="successes-f1"' in successes
    assert 'fill="url(#successes-f1)"' in successes
    assert f"<title>{today}: Refreshed 10</title>" in successes
    assert "Recovered (was failing): 1" in successes
    assert "<script" not in html.split('id="content-main"')[1]
    assert " style=" not in "".join(charts)
    assert "None in this period" in charts[1]


def test_failing_connections_are_grouped_by_reason_with_links(
    staff_client: Client, alice: User, make_connection: ConnectionFactory, frozen: FakeClock
) -> None:
    limited = make_connection(alice, status=ConnectionStatus.REFRESH_FAILING, status_reason="rate_limited")
    down = make_connection(alice, status=ConnectionStatus.REFRESH_FAILING, status_reason="transient", failure_count=4)

    html = staff_client.get(PAGE).content.decode()

    failing = re.search(r'<section id="failing">.*?</section>', html, re.S)
    assert failing is not None
    assert "rate_limited: 1" in failing[0]
    assert "transient: 1" in failing[0]
    for connection in (limited, down):
        assert f'href="/admin/integrations/jiraconnection/{connection.pk}/change/"' in failing[0]
    assert "4 failures" in failing[0]


def test_reconnect_deadlines_in_the_next_30_days_are_listed_soonest_first(
    staff_client: Client, alice: User, make_connection: ConnectionFactory, frozen: FakeClock
) -> None:
    def consented(days_left: float) -> JiraConnection:
        return make_connection(alice, first_consented_at=frozen.now() - CONSENT_LIFETIME + timedelta(days=days_left))

    later, soon = consented(20), consented(3)
    consented(45)
    consented(-1)
    make_connection(
        alice,
        status=ConnectionStatus.NEEDS_RECONNECT,
        first_consented_at=frozen.now() - CONSENT_LIFETIME + timedelta(days=5),
    )

    html = staff_client.get(PAGE).content.decode()

    rows = table_rows(html, "deadlines-table")
    assert [row[0].split()[1] for row in rows] == [str(soon.pk), str(later.pk)]
    assert rows[0][2] == f"{soon.reconnect_by:%Y-%m-%d} UTC"


def test_the_last_scheduled_run_is_shown(staff_client: Client, frozen: FakeClock) -> None:
    from integrations.lifecycle.run import RunOptions, refresh_due

    assert "has never finished" in staff_client.get(PAGE).content.decode()
    refresh_due(RunOptions(concurrency=1))

    assert f"{frozen.now():%Y-%m-%d %H:%M:%S} UTC" in staff_client.get(PAGE).content.decode()


def test_other_counted_kinds_get_a_table_of_their_own(staff_client: Client, frozen: FakeClock) -> None:
    # What a new Kind (webhook deliveries) looks like on the page with no change to it.
    DailyCount.objects.create(
        day=frozen.now().date(), kind="delivery", outcome="rejected", reason="bad_signature", source="acme", value=4
    )

    html = staff_client.get(PAGE).content.decode()

    assert re.search(r"<td>acme</td><td>rejected</td><td>bad_signature</td><td[^>]*>4</td>", html)


def webhooks_on_site(
    connection: JiraConnection, name: str, *, ids: tuple[int | None, int | None], expires_at: datetime, **changes: Any
) -> JiraSite:
    site = JiraSite.objects.create(
        connection=connection, cloud_id=f"cloud-{name}", name=name, url=f"https://{name}.net"
    )
    add_webhooks(site, ids=ids, expires_at=expires_at)
    JiraWebhook.objects.filter(site=site, slot=WebhookSlot.REPORTER).update(**changes)
    return site


def test_webhook_health_by_site_counts_each_state_and_lists_the_sites_that_need_a_look(
    staff_client: Client, alice: User, bob: User, make_connection: ConnectionFactory, frozen: FakeClock
) -> None:
    now = frozen.now()
    mine, theirs = make_connection(alice), make_connection(bob, account_id="bob-1")
    webhooks_on_site(mine, "healthy", ids=(1, 2), expires_at=now + timedelta(days=25))
    delivered = now - timedelta(hours=2)
    JiraWebhook.objects.filter(webhook_id=1).update(last_delivery_at=delivered)
    failing = webhooks_on_site(
        theirs,
        "failing",
        ids=(3, 4),
        expires_at=now + timedelta(days=25),
        status=WebhookStatus.FAILING,
        last_error="Jira refused the filter <b>x</b>",
        next_attempt_at=now + timedelta(minutes=20),
    )
    expiring = webhooks_on_site(mine, "expiring", ids=(5, 6), expires_at=now + timedelta(days=3))
    expired = webhooks_on_site(theirs, "expired", ids=(7, 8), expires_at=now - timedelta(days=1))
    stuck = webhooks_on_site(mine, "stuck", ids=(None, None), expires_at=now)
    JiraWebhook.objects.filter(site=stuck).update(created_at=now - timedelta(hours=2))
    webhooks_on_site(mine, "new", ids=(None, None), expires_at=now)

    html = staff_client.get(PAGE).content.decode()

    section = html.split('<section id="webhooks">', 1)[1].split("</section>", 1)[0]
    assert f"Last delivery received:\n<strong>{delivered:%Y-%m-%d %H:%M:%S} UTC</strong>" in section
    assert table_rows(section, "webhook-health-table") == [
        ["Live updates on", "2"],
        ["Registering", "2"],
        ["Failing, retrying", "1"],
        ["Expired", "1"],
    ]
    assert "Sites that need a look: 4" in section
    rows = table_rows(section, "webhook-unhealthy-table")
    # Soonest to stop delivering first: never registered, then by expiry.
    assert [row[0] for row in rows] == ["stuck", "expired", "expiring", "failing"]
    assert rows[0][1] == f"Connection {mine.pk} (alice@example.com)"
    assert rows[1][2:4] == ["Expired", f"{now - timedelta(days=1):%Y-%m-%d %H:%M} UTC"]
    assert rows[3][2] == "Failing, retrying"
    assert rows[3][5] == "Jira refused the filter &lt;b&gt;x&lt;/b&gt;"
    assert rows[3][6] == f"{now + timedelta(minutes=20):%Y-%m-%d %H:%M} UTC"
    assert f'href="/admin/integrations/jiraconnection/{theirs.pk}/change/"' in section
    assert {failing.pk, expiring.pk, expired.pk, stuck.pk} == {
        int(pk) for pk in re.findall(r'data-site="(\d+)"', section)
    }
    assert "?webhooks=unhealthy" in section
    for token in (mine.access_token, mine.refresh_token, theirs.access_token, theirs.refresh_token):
        assert token
        assert token not in html


def test_without_any_webhook_the_section_says_why(staff_client: Client, frozen: FakeClock) -> None:
    html = staff_client.get(PAGE).content.decode()

    section = html.split('<section id="webhooks">', 1)[1].split("</section>", 1)[0]
    assert "No site has webhooks" in section
    assert "webhook-health-table" not in section


def test_the_page_never_shows_a_token(
    staff_client: Client, alice: User, make_connection: ConnectionFactory, frozen: FakeClock
) -> None:
    connection = make_connection(
        alice,
        status=ConnectionStatus.REFRESH_FAILING,
        status_reason="transient",
        first_consented_at=frozen.now() - CONSENT_LIFETIME + timedelta(days=2),
    )

    html = staff_client.get(PAGE).content.decode()

    assert f"Connection {connection.pk}" in html
    assert connection.access_token
    assert connection.access_token not in html
    assert connection.refresh_token
    assert connection.refresh_token not in html


# --- Cost -------------------------------------------------------------------------------------


def fleet(user: User, n: int, *, now: FakeClock) -> None:
    """n connections, a tenth failing, a tenth needing reconnect, a tenth near their
    deadline; each with a site whose two webhooks are live, failing or expiring."""
    current = now.now()
    statuses = [ConnectionStatus.ACTIVE] * 8 + [ConnectionStatus.REFRESH_FAILING, ConnectionStatus.NEEDS_RECONNECT]
    connections = JiraConnection.objects.bulk_create(
        [
            JiraConnection(
                user=user,
                account_id=f"bulk-{i}",
                status=statuses[i % 10],
                status_reason=("transient", "rate_limited")[i % 2] if statuses[i % 10] != "active" else "",
                tokens_issued_at=current,
                first_consented_at=current - CONSENT_LIFETIME + timedelta(days=10 if i % 10 == 3 else 200),
            )
            for i in range(n)
        ],
        batch_size=1000,
    )
    sites = JiraSite.objects.bulk_create(
        [JiraSite(connection=c, cloud_id=f"cloud-{c.pk}", url=f"https://s{c.pk}.atlassian.net") for c in connections],
        batch_size=1000,
    )
    JiraWebhook.objects.bulk_create(
        [
            JiraWebhook(
                connection_id=site.connection_id,
                site=site,
                slot=slot,
                webhook_id=2 * site.pk + (slot == WebhookSlot.REPORTER),
                status=WebhookStatus.FAILING if i % 7 == 0 else WebhookStatus.ACTIVE,
                expires_at=current + timedelta(days=3 if i % 5 == 0 else 25),
            )
            for i, site in enumerate(sites)
            for slot in (WebhookSlot.ASSIGNEE, WebhookSlot.REPORTER)
        ],
        batch_size=1000,
    )


def page_queries(client: Client) -> int:
    with CaptureQueriesContext(db) as queries:
        response = client.get(PAGE, {"days": "90"})
    assert response.status_code == 200
    return len(queries)


def test_the_page_costs_the_same_queries_for_10_and_10000_connections(
    staff_client: Client, alice: User, bob: User, frozen: FakeClock
) -> None:
    today = frozen.now().date()
    for age in range(90):
        counted(today - timedelta(days=age), "refreshed", 100)
        counted(today - timedelta(days=age), "transient_failure", 2, reason="transient")
    fleet(alice, 10, now=frozen)
    small = page_queries(staff_client)
    fleet(bob, 10_000, now=frozen)
    large = page_queries(staff_client)

    assert small == large
    # The session, the staff user, the admin's second factor, and the page's nine
    # (monitoring.health): more than ten sites need a look in both fleets.
    assert large == 12
    assert JiraConnection.objects.count() == 10_010
    assert JiraWebhook.objects.count() == 20_020


@pytest.mark.parametrize(("value", "ceiling"), [(0, 1), (1, 1), (2, 2), (7, 8), (120, 150), (151, 200), (9001, 10000)])
def test_chart_scales_end_on_a_round_number_at_or_above_the_highest_bar(value: int, ceiling: int) -> None:
    from monitoring.charts import nice_ceiling

    assert nice_ceiling(value) == ceiling
