"""The support admin: facts without secrets, search and filters, and actions through the services."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import timedelta
from typing import Any

import pytest
import responses
from django.contrib.auth.models import Permission
from django.core import mail
from django.db import connection as db
from django.db.models import F
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from integrations import admin as admin_module
from integrations.lifecycle.events import event_record
from integrations.models import (
    Actor,
    ConnectionEvent,
    ConnectionStatus,
    EventKind,
    JiraConnection,
)
from tests.conftest import TOKEN_URL, ConnectionFactory

CHANGELIST = "/admin/integrations/jiraconnection/"
EVENTS = "/admin/integrations/connectionevent/"
SECRETS = ("-secret", "test-client-secret-do-not-log-a8f3c61e9b2d4075e1c9f0a7b3d5e2c4f6")


def change_url(connection: JiraConnection) -> str:
    return f"{CHANGELIST}{connection.pk}/change/"


def assert_no_secrets(html: str, *connections: JiraConnection) -> None:
    for connection in connections:
        assert connection.access_token
        assert connection.access_token not in html
        assert connection.refresh_token
        assert connection.refresh_token not in html
    for secret in SECRETS:
        assert secret not in html


def listed(response: Any) -> list[int]:
    return sorted(obj.pk for obj in response.context["cl"].result_list)


def run_action(client: Client, action: str, *connections: JiraConnection, **extra: str) -> Any:
    data = {"action": action, "index": "0", "_selected_action": [str(c.pk) for c in connections], **extra}
    return client.post(CHANGELIST, data)


def token_reply(access: str, refresh: str) -> dict[str, Any]:
    return {"access_token": access, "refresh_token": refresh, "expires_in": 3600, "scope": "read:jira-work"}


@pytest.fixture
def staff_client(client: Client, staff: User) -> Client:
    client.force_login(staff)
    return client


@pytest.fixture
def pair(alice: User, bob: User, make_connection: ConnectionFactory) -> tuple[JiraConnection, JiraConnection]:
    return make_connection(alice), make_connection(bob)


def staff_with(*codenames: str) -> User:
    user = User.objects.create_user("helpdesk@example.com", "helpdesk horse battery staple", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="integrations", codename__in=codenames))
    return user


# --- Pages show no secrets --------------------------------------------------------------


def test_list_shows_connection_facts_and_no_tokens(
    staff_client: Client, alice: User, make_connection: ConnectionFactory
) -> None:
    connection = make_connection(
        alice,
        sites=[("cloud-a", "https://alpha.atlassian.net", "Alpha"), ("cloud-b", "https://beta.atlassian.net", "Beta")],
        status=ConnectionStatus.REFRESH_FAILING,
        status_reason="rate_limited",
        failure_count=3,
    )

    response = staff_client.get(CHANGELIST)

    assert response.status_code == 200
    html = response.content.decode()
    for text in (
        "alice@example.com",
        "Account 1 &lt;account1@example.com&gt;",
        "https://alpha.atlassian.net, https://beta.atlassian.net",
        "Failing (retrying) (rate_limited)",
    ):
        assert text in html
    assert listed(response) == [connection.pk]
    assert_no_secrets(html, connection)


def test_list_costs_the_same_queries_for_one_or_many_connections(
    staff_client: Client, alice: User, bob: User, make_connection: ConnectionFactory
) -> None:
    make_connection(alice)
    with CaptureQueriesContext(db) as one:
        assert staff_client.get(CHANGELIST).status_code == 200
    for n in range(6):
        make_connection(
            bob if n % 2 else alice,
            sites=[(f"c{n}a", f"https://a{n}.atlassian.net", "A"), (f"c{n}b", f"https://b{n}.atlassian.net", "B")],
        )
    with CaptureQueriesContext(db) as seven:
        response = staff_client.get(CHANGELIST)

    assert len(listed(response)) == 7
    assert len(seven.captured_queries) == len(one.captured_queries)
    # Tokens are deferred: the list never decrypts them.
    sql = " ".join(q["sql"] for q in seven.captured_queries)
    assert '."access_token"' not in sql
    assert '."refresh_token"' not in sql


def test_change_page_shows_account_sites_and_events_but_no_tokens_or_form(
    staff_client: Client, alice: User, make_connection: ConnectionFactory
) -> None:
    connection = make_connection(alice, version=7)
    event_record(connection=connection, kind=EventKind.CONNECTED, actor=Actor.USER, message="3 site(s)")

    response = staff_client.get(change_url(connection))

    assert response.status_code == 200
    html = response.content.decode()
    for text in (connection.account_id, "account1@example.com", "https://site1.atlassian.net", "cloud-1", "3 site(s)"):
        assert text in html
    assert f"{connection.reconnect_by:%Y-%m-%d} UTC" in html
    assert ">7<" in html
    for field in ("access_token", "refresh_token", "claim_id", "claimed_until", "version", "status"):
        assert f'name="{field}"' not in html
    assert 'name="_save"' not in html
    assert_no_secrets(html, connection)


def test_change_page_says_whether_and_why_the_connection_is_due_by_the_refresh_rule(
    staff_client: Client, alice: User, make_connection: ConnectionFactory
) -> None:
    now = timezone.now()
    expiring = make_connection(alice, access_token_expires_at=now + timedelta(minutes=10))
    fresh_one = make_connection(alice, account_id="acc-2", access_token_expires_at=now + timedelta(minutes=50))

    assert (
        "Yes: warm: used 0 min ago, access token expires soon"
        in staff_client.get(change_url(expiring)).content.decode()
    )
    page = staff_client.get(change_url(fresh_one)).content.decode()
    assert "Due for refresh" in page
    assert "Yes:" not in page
    # The policy behind the answer, in one sentence.
    assert "refreshes a connection used in the last 24 hours" in page


def test_change_page_lists_only_the_newest_events_and_links_to_all(
    staff_client: Client, alice: User, make_connection: ConnectionFactory
) -> None:
    connection = make_connection(alice)
    start = timezone.now() - timedelta(days=1)
    ConnectionEvent.objects.bulk_create(
        ConnectionEvent(
            connection=connection,
            kind=EventKind.REFRESHED,
            message=f"event number {n:03d}",
            created_at=start + timedelta(minutes=n),
        )
        for n in range(60)
    )

    html = staff_client.get(change_url(connection)).content.decode()

    assert "event number 059" in html
    assert "event number 010" in html
    assert "event number 009" not in html
    assert html.index("event number 059") < html.index("event number 058")
    assert f"{EVENTS}?connection__id__exact={connection.pk}" in html
    assert "All 60 events" in html


def test_change_form_cannot_be_saved(staff_client: Client, alice: User, make_connection: ConnectionFactory) -> None:
    connection = make_connection(alice)

    response = staff_client.post(change_url(connection), {"status": "needs_reconnect", "version": "99"})

    assert response.status_code == 403
    stored = JiraConnection.objects.get(pk=connection.pk)
    assert (stored.status, stored.version) == (ConnectionStatus.ACTIVE, 1)


# --- Search and filters ------------------------------------------------------------------


@pytest.mark.parametrize(
    "term",
    ["alice@example.com", "account1@example.com", "Account 1", "557058:account-1", "site1.atlassian.net", "cloud-1"],
    ids=["user-email", "atlassian-email", "account-name", "account-id", "site-url", "cloud-id"],
)
def test_search_finds_the_connection_by_each_field(
    staff_client: Client, pair: tuple[JiraConnection, JiraConnection], term: str
) -> None:
    response = staff_client.get(CHANGELIST, {"q": term})

    assert response.status_code == 200
    assert listed(response) == [pair[0].pk]
    assert_no_secrets(response.content.decode(), *pair)


@pytest.mark.parametrize("which", ["access_token", "refresh_token"])
def test_search_for_a_token_value_finds_nothing(
    staff_client: Client, pair: tuple[JiraConnection, JiraConnection], which: str
) -> None:
    token = getattr(pair[0], which)

    response = staff_client.get(CHANGELIST, {"q": token})

    assert response.status_code == 200
    assert listed(response) == []
    # The search box and its links echo the query back; nothing else may carry it.
    html = response.content.decode().replace(f'value="{token}"', "").replace(f"q={token}", "")
    assert_no_secrets(html, *pair)


def test_filtering_on_a_token_column_is_refused_without_an_error_page(
    staff_client: Client, pair: tuple[JiraConnection, JiraConnection]
) -> None:
    response = staff_client.get(CHANGELIST, {"access_token": pair[0].access_token})

    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")


def test_expiry_filter_picks_expired_due_and_soon_expiring_tokens(
    staff_client: Client, alice: User, make_connection: ConnectionFactory
) -> None:
    now = timezone.now()
    expired, in_10m, in_45m, in_3h = (
        make_connection(alice, access_token_expires_at=now + delta)
        for delta in (timedelta(minutes=-5), timedelta(minutes=10), timedelta(minutes=45), timedelta(hours=3))
    )
    unknown = make_connection(alice, access_token_expires_at=None)

    for value, expected in (
        ("expired", [expired]),
        # The refresh_tokens rule itself (lifecycle.due): used today, expiring within 15 minutes.
        ("due", [expired, in_10m]),
        ("1h", [in_10m, in_45m]),
        ("unknown", [unknown]),
        (None, [expired, in_10m, in_45m, in_3h, unknown]),
    ):
        response = staff_client.get(CHANGELIST, {"expires": value} if value else {})
        assert response.status_code == 200
        assert listed(response) == sorted(c.pk for c in expected), value
        assert_no_secrets(response.content.decode(), expired, in_10m, in_45m, in_3h, unknown)


def test_reconnect_by_and_status_filters(staff_client: Client, alice: User, make_connection: ConnectionFactory) -> None:
    now = timezone.now()
    lapsed, in_5d, in_20d, fresh = (
        make_connection(alice, first_consented_at=now - timedelta(days=days)) for days in (366, 360, 345, 0)
    )
    JiraConnection.objects.filter(pk=lapsed.pk).update(status=ConnectionStatus.NEEDS_RECONNECT)

    for params, expected in (
        ({"reconnect_by": "passed"}, [lapsed]),
        ({"reconnect_by": "7d"}, [in_5d]),
        ({"reconnect_by": "30d"}, [in_5d, in_20d]),
        ({"status__exact": "needs_reconnect"}, [lapsed]),
        ({"status__exact": "active"}, [in_5d, in_20d, fresh]),
    ):
        response = staff_client.get(CHANGELIST, params)
        assert response.status_code == 200
        assert listed(response) == sorted(c.pk for c in expected), params
        assert_no_secrets(response.content.decode(), lapsed, in_5d, in_20d, fresh)


# --- Actions ------------------------------------------------------------------------------


def test_refresh_now_stores_the_new_pair_and_records_the_staff_member(
    staff_client: Client,
    staff: User,
    pair: tuple[JiraConnection, JiraConnection],
    mocked: responses.RequestsMock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    connection = pair[0]
    mocked.post(TOKEN_URL, json=token_reply("new-access-secret", "new-refresh-secret"))

    with caplog.at_level(logging.DEBUG):
        response = run_action(staff_client, "refresh_now", connection)
        page = staff_client.get(response["Location"])

    assert response.status_code == 302
    assert len(mocked.calls) == 1
    assert json.loads(mocked.calls[0].request.body)["refresh_token"] == "refresh-token-1-secret"
    stored = JiraConnection.objects.get(pk=connection.pk)
    assert (stored.access_token, stored.refresh_token) == ("new-access-secret", "new-refresh-secret")
    assert stored.version == connection.version + 1
    assert stored.last_refreshed_at is not None
    event = ConnectionEvent.objects.get(connection=connection)
    assert (event.kind, event.actor, event.actor_user) == (EventKind.STAFF_REFRESH, Actor.STAFF, staff)
    assert f"{connection}: refreshed." in page.content.decode()
    assert "secret" not in page.content.decode()
    assert "secret" not in caplog.text


def test_refresh_now_with_a_revoked_grant_marks_needs_reconnect(
    staff_client: Client, staff: User, pair: tuple[JiraConnection, JiraConnection], mocked: responses.RequestsMock
) -> None:
    connection = pair[0]
    mocked.post(
        TOKEN_URL, status=403, json={"error": "invalid_grant", "error_description": "Unknown or invalid refresh token."}
    )

    response = run_action(staff_client, "refresh_now", connection)

    page = staff_client.get(response["Location"]).content.decode()
    stored = JiraConnection.objects.get(pk=connection.pk)
    assert stored.status == ConnectionStatus.NEEDS_RECONNECT
    assert stored.refresh_token == connection.refresh_token
    assert "needs reconnect" in page
    staff_event = ConnectionEvent.objects.get(connection=connection, actor=Actor.STAFF)
    assert (staff_event.kind, staff_event.actor_user, staff_event.detail) == (
        EventKind.STAFF_REFRESH,
        staff,
        {"outcome": "needs_reconnect"},
    )
    assert ConnectionEvent.objects.filter(connection=connection, kind=EventKind.NEEDS_RECONNECT).exists()
    assert [m.to for m in mail.outbox] == [["alice@example.com"]]


def test_refresh_now_superseded_by_a_reconnect_says_so_and_keeps_the_newer_tokens(
    staff_client: Client, staff: User, pair: tuple[JiraConnection, JiraConnection], mocked: responses.RequestsMock
) -> None:
    connection = pair[0]

    def reconnected_meanwhile(request: Any) -> tuple[int, dict[str, str], str]:
        # The user reconnects while staff's refresh is in flight: a newer write.
        JiraConnection.objects.filter(pk=connection.pk).update(version=F("version") + 1)
        return 200, {}, json.dumps(token_reply("staff-access-secret", "staff-refresh-secret"))

    mocked.add_callback(responses.POST, TOKEN_URL, callback=reconnected_meanwhile)

    response = run_action(staff_client, "refresh_now", connection)

    page = staff_client.get(response["Location"]).content.decode()
    assert "newer tokens were written meanwhile" in page
    assert "another refresh was under way" not in page
    assert JiraConnection.objects.get(pk=connection.pk).refresh_token == connection.refresh_token
    staff_event = ConnectionEvent.objects.get(connection=connection, actor=Actor.STAFF)
    assert (staff_event.actor_user, staff_event.detail) == (staff, {"outcome": "superseded"})
    assert_no_secrets(page, connection)


def test_refresh_now_while_another_worker_holds_the_claim_says_so_and_calls_nobody(
    staff_client: Client, staff: User, pair: tuple[JiraConnection, JiraConnection], mocked: responses.RequestsMock
) -> None:
    connection = pair[0]
    JiraConnection.objects.filter(pk=connection.pk).update(
        claim_id=uuid.uuid4(), claimed_until=timezone.now() + timedelta(minutes=1)
    )

    response = run_action(staff_client, "refresh_now", connection)

    page = staff_client.get(response["Location"]).content.decode()
    assert "another refresh was under way; nothing was done" in page
    assert len(mocked.calls) == 0
    staff_event = ConnectionEvent.objects.get(connection=connection, actor=Actor.STAFF)
    assert staff_event.detail == {"outcome": "claimed_elsewhere"}


def test_refresh_now_with_refused_client_credentials_reports_it_and_changes_no_connection(
    staff_client: Client, pair: tuple[JiraConnection, JiraConnection], mocked: responses.RequestsMock
) -> None:
    mocked.post(TOKEN_URL, status=401, json={"error": "access_denied", "error_description": "Unauthorized"})
    columns = (
        "status",
        "status_reason",
        "failure_count",
        "next_attempt_at",
        "version",
        "claim_id",
        "last_refreshed_at",
    )
    before = list(JiraConnection.objects.order_by("pk").values_list(*columns))

    response = run_action(staff_client, "refresh_now", *pair)

    page = staff_client.get(response["Location"]).content.decode()
    assert "Refresh stopped, nothing was changed" in page
    assert "ATLASSIAN_CLIENT_SECRET" in page
    assert "test-client-secret-do-not-log-a8f3c61e9b2d4075e1c9f0a7b3d5e2c4f6" not in page
    assert len(mocked.calls) == 1
    assert list(JiraConnection.objects.order_by("pk").values_list(*columns)) == before
    for connection in pair:
        assert JiraConnection.objects.get(pk=connection.pk).refresh_token == connection.refresh_token
    assert mail.outbox == []


def test_refresh_now_refuses_a_bulk_selection_without_calling_atlassian(
    staff_client: Client, alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock
) -> None:
    connections = [make_connection(alice) for _ in range(admin_module.MAX_REFRESH_NOW + 1)]

    response = run_action(staff_client, "refresh_now", *connections)

    assert "at most 50 connections" in staff_client.get(response["Location"]).content.decode()
    assert len(mocked.calls) == 0
    assert not ConnectionEvent.objects.exists()


def test_mark_needs_reconnect_records_the_staff_member_and_emails_the_user(
    staff_client: Client, staff: User, pair: tuple[JiraConnection, JiraConnection]
) -> None:
    connection = pair[0]

    response = run_action(staff_client, "mark_needs_reconnect", connection)

    assert response.status_code == 302
    stored = JiraConnection.objects.get(pk=connection.pk)
    assert (stored.status, stored.status_reason) == (ConnectionStatus.NEEDS_RECONNECT, "staff")
    event = ConnectionEvent.objects.get(connection=connection)
    assert (event.kind, event.actor, event.actor_user) == (EventKind.STAFF_MARK_NEEDS_RECONNECT, Actor.STAFF, staff)
    assert event.message == "Support marked this connection for reconnection."
    assert [m.to for m in mail.outbox] == [["alice@example.com"]]
    assert JiraConnection.objects.get(pk=pair[1].pk).status == ConnectionStatus.ACTIVE


def test_disconnect_asks_first_then_deletes_and_keeps_the_history(
    staff_client: Client, staff: User, pair: tuple[JiraConnection, JiraConnection]
) -> None:
    connection = pair[0]

    confirm = run_action(staff_client, "disconnect", connection)

    assert confirm.status_code == 200
    assert "Yes, disconnect" in confirm.content.decode()
    assert_no_secrets(confirm.content.decode(), connection)
    assert JiraConnection.objects.filter(pk=connection.pk).exists()

    done = staff_client.post(
        CHANGELIST, {"action": "disconnect", "post": "yes", "_selected_action": [str(connection.pk)]}
    )

    assert done.status_code == 302
    assert not JiraConnection.objects.filter(pk=connection.pk).exists()
    assert JiraConnection.objects.filter(pk=pair[1].pk).exists()
    event = ConnectionEvent.objects.get(kind=EventKind.STAFF_DISCONNECT)
    assert (event.actor, event.actor_user, event.connection) == (Actor.STAFF, staff, None)
    assert (event.account_id, event.user_id) == (connection.account_id, connection.user_id)
    for term in (connection.account_id, "alice@example.com"):
        history = staff_client.get(EVENTS, {"q": term})
        assert [e.pk for e in history.context["cl"].result_list] == [event.pk]
        assert "(disconnected)" in history.content.decode()


def test_change_page_buttons_run_the_actions_and_come_back(
    staff_client: Client, staff: User, pair: tuple[JiraConnection, JiraConnection]
) -> None:
    connection = pair[0]
    html = staff_client.get(change_url(connection)).content.decode()
    for action in ("refresh_now", "mark_needs_reconnect", "disconnect"):
        assert f'name="action" value="{action}"' in html

    response = run_action(staff_client, "mark_needs_reconnect", connection, _from="change")

    assert response.status_code == 302
    assert response["Location"] == change_url(connection)
    assert JiraConnection.objects.get(pk=connection.pk).status == ConnectionStatus.NEEDS_RECONNECT
    assert ConnectionEvent.objects.get(connection=connection).actor_user == staff


def test_delete_and_add_are_not_offered(staff_client: Client, pair: tuple[JiraConnection, JiraConnection]) -> None:
    response = staff_client.get(CHANGELIST)

    assert "delete_selected" not in response.content.decode()
    assert "refresh_now" in response.content.decode()
    assert staff_client.get(f"{CHANGELIST}add/").status_code == 403
    assert staff_client.get(f"{CHANGELIST}{pair[0].pk}/delete/").status_code == 403
    deleted = run_action(staff_client, "delete_selected", pair[0], post="yes")
    assert deleted.status_code == 302
    assert JiraConnection.objects.filter(pk=pair[0].pk).exists()


# --- Who may see and act -------------------------------------------------------------------


@pytest.mark.parametrize("user_fixture", ["alice", None], ids=["non-staff", "anonymous"])
def test_non_staff_are_sent_to_the_admin_login(
    client: Client,
    pair: tuple[JiraConnection, JiraConnection],
    request: pytest.FixtureRequest,
    user_fixture: str | None,
) -> None:
    if user_fixture:
        client.force_login(request.getfixturevalue(user_fixture))

    for url in (CHANGELIST, change_url(pair[0]), EVENTS):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/?next=")


def test_staff_with_view_permission_can_look_but_not_act(
    client: Client, pair: tuple[JiraConnection, JiraConnection], mocked: responses.RequestsMock
) -> None:
    client.force_login(staff_with("view_jiraconnection", "view_connectionevent"))

    assert client.get(CHANGELIST).status_code == 200
    html = client.get(change_url(pair[0])).content.decode()
    assert 'name="action"' not in html
    assert_no_secrets(html, *pair)
    for action in ("refresh_now", "mark_needs_reconnect", "disconnect"):
        run_action(client, action, pair[0], post="yes")

    assert len(mocked.calls) == 0
    stored = JiraConnection.objects.get(pk=pair[0].pk)
    assert (stored.status, stored.version) == (ConnectionStatus.ACTIVE, 1)
    assert not ConnectionEvent.objects.exists()


def test_staff_with_change_permission_can_act(client: Client, pair: tuple[JiraConnection, JiraConnection]) -> None:
    helpdesk = staff_with("view_jiraconnection", "change_jiraconnection")
    client.force_login(helpdesk)

    run_action(client, "mark_needs_reconnect", pair[0])

    assert JiraConnection.objects.get(pk=pair[0].pk).status == ConnectionStatus.NEEDS_RECONNECT
    assert ConnectionEvent.objects.get(connection=pair[0]).actor_user == helpdesk


def test_staff_without_permissions_are_refused(client: Client, pair: tuple[JiraConnection, JiraConnection]) -> None:
    client.force_login(staff_with())

    assert client.get(CHANGELIST).status_code == 403
    assert client.get(EVENTS).status_code == 403


# --- History ------------------------------------------------------------------------------


def test_event_history_is_read_only_and_filterable(
    staff_client: Client, staff: User, pair: tuple[JiraConnection, JiraConnection]
) -> None:
    connected = event_record(connection=pair[0], kind=EventKind.CONNECTED, actor=Actor.USER)
    marked = event_record(
        connection=pair[1], kind=EventKind.STAFF_MARK_NEEDS_RECONNECT, actor=Actor.STAFF, actor_user=staff
    )

    for params, expected in (
        ({"kind__exact": "connected"}, [connected]),
        ({"actor__exact": "staff"}, [marked]),
        ({"q": "bob@example.com"}, [marked]),
        ({"q": pair[0].account_id}, [connected]),
        ({"connection__id__exact": str(pair[1].pk)}, [marked]),
    ):
        response = staff_client.get(EVENTS, params)
        assert response.status_code == 200
        assert [e.pk for e in response.context["cl"].result_list] == [e.pk for e in expected], params
        assert_no_secrets(response.content.decode(), *pair)

    page = staff_client.get(f"{EVENTS}{connected.pk}/change/")
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert staff_client.post(f"{EVENTS}{connected.pk}/change/", {"message": "edited"}).status_code == 403
    assert staff_client.get(f"{EVENTS}add/").status_code == 403
    assert staff_client.get(f"{EVENTS}{connected.pk}/delete/").status_code == 403
    assert ConnectionEvent.objects.get(pk=connected.pk).message == ""
