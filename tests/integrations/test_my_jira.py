"""My Jira (/jira/): open assigned issues per enabled site, fetched in parallel."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import pytest
import responses
from django.core.cache import cache
from django.db.backends.utils import CursorWrapper
from django.test import Client
from django.utils import timezone

from accounts.models import User
from integrations import clock
from integrations.models import ConnectionStatus, JiraConnection, JiraSite
from integrations.myjira.page import FIELDS, JQL
from tests.support.atlassian import API, TOKEN_URL
from tests.support.connections import ConnectionFactory, tokens_of
from tests.support.secrets import assert_no_secrets

PAGE = "/jira/"


def search_url(cloud_id: str) -> str:
    return f"{API}/ex/jira/{cloud_id}/rest/api/3/search/jql"


def issue(key: str, summary: str = "Fix the thing", **fields: Any) -> dict[str, Any]:
    return {
        "id": key.split("-")[-1],
        "key": key,
        "fields": {
            "summary": summary,
            "status": {"name": "In Progress", "statusCategory": {"key": "indeterminate"}},
            "priority": {"name": "High"},
            "updated": "2024-01-15T10:30:00.000+0000",
            **fields,
        },
    }


def page(*issues: dict[str, Any], next_token: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"issues": list(issues), "isLast": next_token is None}
    if next_token:
        body["nextPageToken"] = next_token
    return body


def sent(call: Any) -> dict[str, Any]:
    return json.loads(call.request.body)


def bearer(call: Any) -> str:
    return str(call.request.headers["Authorization"])


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(clock, "sleep", slept.append)
    return slept


@pytest.fixture
def alice_client(client: Client, alice: User) -> Client:
    client.force_login(alice)
    return client


def test_anonymous_user_is_sent_to_login(client: Client, db: None) -> None:
    response = client.get(PAGE)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_issues_render_from_a_search_for_open_assigned_issues(
    alice_client: Client, alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock
) -> None:
    connection = make_connection(alice, sites=[("cloud-a", "https://acme.atlassian.net", "Acme")])
    mocked.post(search_url("cloud-a"), json=page(issue("ACME-7", "Ship the release")))

    response = alice_client.get(PAGE)

    assert response.status_code == 200
    assert sent(mocked.calls[0]) == {"jql": JQL, "fields": FIELDS, "maxResults": 20}
    assert JQL == "assignee = currentUser() AND statusCategory != Done ORDER BY updated DESC"
    assert FIELDS == ["summary", "status", "priority", "updated"]
    assert bearer(mocked.calls[0]) == f"Bearer {connection.access_token}"
    html = response.content.decode()
    assert 'href="https://acme.atlassian.net/browse/ACME-7"' in html
    assert "Ship the release" in html
    assert "In Progress" in html
    assert "High" in html
    assert "15 Jan 2024, 10:30" in html
    assert "More</a>" not in html
    assert_no_secrets(html, *tokens_of(connection))


def test_failing_site_shows_its_message_while_the_others_render(
    alice_client: Client,
    alice: User,
    make_connection: ConnectionFactory,
    mocked: responses.RequestsMock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = make_connection(
        alice,
        sites=[("cloud-a", "https://a.atlassian.net", "Site A"), ("cloud-b", "https://b.atlassian.net", "Site B")],
    )
    second = make_connection(alice, sites=[("cloud-c", "https://c.atlassian.net", "Site C")])
    mocked.post(search_url("cloud-a"), json=page(issue("AAA-1", "Alpha work")))
    mocked.post(search_url("cloud-b"), status=500, json={"errorMessages": ["boom"]})
    mocked.post(search_url("cloud-c"), json=page(issue("CCC-3", "Gamma work")))

    with caplog.at_level("DEBUG"):
        response = alice_client.get(PAGE)

    assert response.status_code == 200
    html = response.content.decode()
    assert "Alpha work" in html
    assert "Gamma work" in html
    failed = JiraSite.objects.get(cloud_id="cloud-b")
    section = html.split(f'id="site-{failed.pk}"')[1].split('class="jira-site"')[0]
    assert "Jira did not answer, try again." in section
    assert html.count("Jira did not answer") == 1
    assert len(mocked.calls) == 3
    assert_no_secrets({"logs": caplog.text, "page": html}, *tokens_of(first, second))


def test_more_link_fetches_that_sites_next_page_with_the_token(
    alice_client: Client, alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock
) -> None:
    make_connection(
        alice,
        sites=[("cloud-a", "https://a.atlassian.net", "Site A"), ("cloud-b", "https://b.atlassian.net", "Site B")],
    )
    site_a = JiraSite.objects.get(cloud_id="cloud-a")
    token = 'opaque/+= &token"<x>'
    first_page = [issue(f"AAA-{n}", f"Page one issue {n}") for n in range(1, 21)]
    mocked.post(search_url("cloud-a"), json=page(*first_page, next_token=token))
    mocked.post(search_url("cloud-b"), json=page(issue("BBB-1", "Other site issue")))

    response = alice_client.get(PAGE)
    html = response.content.decode()
    assert "Page one issue 20" in html
    more = response.context["page"].connections[0].sites[0].more_url
    assert more.startswith(f"/jira/?site={site_a.pk}&page=")
    assert 'page=opaque%2F%2B%3D+%26token%22%3Cx%3E"' in html.replace("&amp;", "&")
    assert len(mocked.calls) == 2

    mocked.replace(responses.POST, search_url("cloud-a"), json=page(issue("AAA-21", "Page two issue")))
    response = alice_client.get(more)

    assert response.status_code == 200
    html = response.content.decode()
    assert "Page two issue" in html
    assert "Page one issue" not in html
    assert "Other site issue" not in html
    assert len(mocked.calls) == 3
    last = mocked.calls[2]
    assert last.request.url == search_url("cloud-a")
    assert sent(last) == {"jql": JQL, "fields": FIELDS, "maxResults": 20, "nextPageToken": token}
    assert "More</a>" not in html


def test_user_without_connection_is_told_how_to_connect(alice_client: Client, mocked: responses.RequestsMock) -> None:
    response = alice_client.get(PAGE)

    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="no-connection"' in html
    assert 'href="/settings/"' in html
    assert "Connect Jira" in html
    assert len(mocked.calls) == 0


def test_needs_reconnect_connection_shows_reconnect_without_api_call(
    alice_client: Client, alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock
) -> None:
    connection = make_connection(
        alice, status=ConnectionStatus.NEEDS_RECONNECT, status_message="Atlassian no longer accepts this connection."
    )

    response = alice_client.get(PAGE)

    assert response.status_code == 200
    html = response.content.decode()
    banner = html.split(f'id="reconnect-{connection.pk}"')[1].split("</div>")[0]
    assert "Atlassian no longer accepts this connection." in banner
    assert 'action="/integrations/jira/connect/"' in banner
    assert 'name="csrfmiddlewaretoken"' in banner
    assert ">Reconnect</button>" in banner
    assert len(mocked.calls) == 0


def test_disabled_site_is_not_fetched_and_is_counted_as_hidden(
    alice_client: Client, alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock
) -> None:
    make_connection(
        alice,
        sites=[("cloud-on", "https://on.atlassian.net", "Shown"), ("cloud-off", "https://off.atlassian.net", "Off")],
    )
    JiraSite.objects.filter(cloud_id="cloud-off").update(enabled=False)
    mocked.post(search_url("cloud-on"), json=page(issue("ON-1")))

    response = alice_client.get(PAGE)

    html = response.content.decode()
    assert [call.request.url for call in mocked.calls] == [search_url("cloud-on")]
    assert "off.atlassian.net" not in html
    assert "1 hidden site —" in html


@pytest.mark.django_db(transaction=True)
def test_expired_access_token_is_refreshed_before_the_search(
    client: Client, make_connection: ConnectionFactory, mocked: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    user = User.objects.create_user("carol@example.com", "carol horse battery staple")
    client.force_login(user)
    connection = make_connection(
        user, access_token="old-access-secret", access_token_expires_at=timezone.now() - timedelta(minutes=5)
    )
    mocked.post(
        TOKEN_URL,
        json={"access_token": "new-access-secret", "refresh_token": "new-refresh-secret", "expires_in": 3600},
    )
    mocked.post(search_url("cloud-1"), json=page(issue("NEW-1", "Seen with the new token")))

    with caplog.at_level("DEBUG"):
        response = client.get(PAGE)

    assert "Seen with the new token" in response.content.decode()
    assert [call.request.url for call in mocked.calls] == [TOKEN_URL, search_url("cloud-1")]
    assert bearer(mocked.calls[1]) == "Bearer new-access-secret"
    connection.refresh_from_db()
    assert connection.access_token == "new-access-secret"
    assert connection.refresh_token == "new-refresh-secret"
    assert_no_secrets(
        caplog.text, "old-access-secret", "new-access-secret", "new-refresh-secret", "refresh-token-1-secret"
    )


@pytest.mark.django_db(transaction=True)
def test_token_rejected_on_two_sites_of_one_connection_is_refreshed_once(
    client: Client, make_connection: ConnectionFactory, mocked: responses.RequestsMock
) -> None:
    user = User.objects.create_user("dave@example.com", "dave horse battery staple")
    client.force_login(user)
    make_connection(
        user,
        access_token="revoked-access-secret",
        sites=[("cloud-a", "https://a.atlassian.net", "Site A"), ("cloud-b", "https://b.atlassian.net", "Site B")],
    )
    mocked.post(TOKEN_URL, json={"access_token": "new-access-secret", "refresh_token": "r2", "expires_in": 3600})
    for cloud in ("cloud-a", "cloud-b"):
        old = {"Authorization": "Bearer revoked-access-secret"}
        new = {"Authorization": "Bearer new-access-secret"}
        mocked.post(search_url(cloud), status=401, json={}, match=[responses.matchers.header_matcher(old)])
        mocked.post(search_url(cloud), json=page(issue(f"{cloud}-1")), match=[responses.matchers.header_matcher(new)])

    html = client.get(PAGE).content.decode()

    assert "cloud-a-1" in html
    assert "cloud-b-1" in html
    assert [call.request.url for call in mocked.calls].count(TOKEN_URL) == 1


def test_scope_mismatch_shows_reconnect_message_without_refresh(
    alice_client: Client, alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock
) -> None:
    make_connection(alice)
    mocked.post(search_url("cloud-1"), status=401, json={"code": 401, "message": "Unauthorized; scope does not match"})

    response = alice_client.get(PAGE)

    html = response.content.decode()
    assert "reconnect to grant access" in html
    assert ">Reconnect</button>" in html
    assert [call.request.url for call in mocked.calls] == [search_url("cloud-1")]


def test_long_retry_after_is_reported_not_waited_for(
    alice_client: Client,
    alice: User,
    make_connection: ConnectionFactory,
    mocked: responses.RequestsMock,
    no_sleep: list[float],
) -> None:
    make_connection(alice)
    mocked.post(search_url("cloud-1"), status=429, headers={"Retry-After": "120"}, json={})

    html = alice_client.get(PAGE).content.decode()

    assert "Jira did not answer, try again." in html
    assert len(mocked.calls) == 1
    assert no_sleep == []


def test_issue_summary_is_html_escaped(
    alice_client: Client, alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock
) -> None:
    make_connection(alice)
    mocked.post(
        search_url("cloud-1"),
        json=page(issue("XSS-1", "<script>alert(1)</script>", status={"name": "<b>x</b>", "statusCategory": {}})),
    )

    html = alice_client.get(PAGE).content.decode()

    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)" not in html
    assert "<b>x</b>" not in html


def test_another_users_site_is_not_found(
    alice_client: Client,
    alice: User,
    bob: User,
    make_connection: ConnectionFactory,
    mocked: responses.RequestsMock,
) -> None:
    make_connection(alice)
    make_connection(bob, sites=[("cloud-bob", "https://bob.atlassian.net", "Bob's")])
    bobs_site = JiraSite.objects.get(cloud_id="cloud-bob")

    assert alice_client.get(PAGE, {"site": bobs_site.pk, "page": "t"}).status_code == 404
    assert alice_client.get(PAGE, {"site": bobs_site.pk}).status_code == 404
    assert alice_client.get(PAGE, {"site": "1 OR 1=1"}).status_code == 404
    assert alice_client.get(PAGE, {"site": "٣"}).status_code == 404
    assert len(mocked.calls) == 0


def test_malformed_page_token_is_refused_without_api_call(
    alice_client: Client, alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock
) -> None:
    make_connection(alice)
    site = JiraSite.objects.get(cloud_id="cloud-1")

    assert alice_client.get(PAGE, {"site": site.pk, "page": "x" * 5000}).status_code == 400
    assert alice_client.get(PAGE, {"site": site.pk, "page": "a\nb"}).status_code == 400
    assert len(mocked.calls) == 0


def test_sites_are_fetched_in_parallel(
    alice_client: Client, alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock
) -> None:
    clouds = ["cloud-a", "cloud-b", "cloud-c"]
    make_connection(alice, sites=[(c, f"https://{c}.atlassian.net", c) for c in clouds])
    # Each reply waits until all three requests are in flight: a serial fetch breaks it.
    barrier = threading.Barrier(len(clouds), timeout=10)

    def reply(request: Any) -> tuple[int, dict[str, str], str]:
        barrier.wait()
        cloud = request.url.split("/ex/jira/")[1].split("/")[0]
        return 200, {}, json.dumps(page(issue(f"{cloud.upper()}-1", f"from {cloud}")))

    for cloud in clouds:
        mocked.add_callback(responses.POST, search_url(cloud), callback=reply)

    html = alice_client.get(PAGE).content.decode()

    for cloud in clouds:
        assert f"from {cloud}" in html


@pytest.mark.django_db(transaction=True)
def test_query_count_does_not_grow_with_connections(
    client: Client,
    alice: User,
    bob: User,
    make_connection: ConnectionFactory,
    mocked: responses.RequestsMock,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
) -> None:
    # Every site fetched on every view: neither the cache nor the site cap may hide a query.
    settings.MY_JIRA_CACHE_SECONDS = 0
    settings.MY_JIRA_MAX_SITES = 25
    make_connection(alice)
    for _ in range(20):
        make_connection(bob)
    for n in range(1, 22):
        mocked.post(search_url(f"cloud-{n}"), json=page(issue(f"N{n}-1")))
    # Counted on every thread, workers included (CaptureQueriesContext sees one thread).
    statements: list[str] = []
    lock = threading.Lock()
    original = CursorWrapper._execute

    def counting(self: CursorWrapper, sql: str, *args: Any) -> Any:
        with lock:
            statements.append(sql)
        return original(self, sql, *args)

    monkeypatch.setattr(CursorWrapper, "_execute", counting)

    def queries_for(user: User) -> int:
        client.force_login(user)
        statements.clear()
        response = client.get(PAGE)
        assert response.status_code == 200
        return len(statements)

    # Warm-ups: a user's first visit to My Jira has no last visit to compare with.
    queries_for(alice)
    queries_for(bob)
    one = queries_for(alice)
    twenty = queries_for(bob)

    assert len(mocked.calls) == 1 + 1 + 20 + 20
    assert one == twenty, statements
    assert JiraConnection.objects.filter(user=bob).count() == 20


def test_a_reload_within_the_cache_time_shows_the_issues_without_calling_jira(
    alice_client: Client,
    alice: User,
    make_connection: ConnectionFactory,
    mocked: responses.RequestsMock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connection = make_connection(alice, sites=[("cloud-a", "https://acme.atlassian.net", "Acme")])
    mocked.post(search_url("cloud-a"), json=page(issue("ACME-7", "Ship the release")))
    stored: list[Any] = []
    real_set = cache.set

    def recording_set(key: str, value: Any, *args: Any, **kwargs: Any) -> Any:
        stored.append(value)
        return real_set(key, value, *args, **kwargs)

    monkeypatch.setattr(cache, "set", recording_set)

    first = alice_client.get(PAGE).content.decode()
    second = alice_client.get(PAGE).content.decode()

    assert "Ship the release" in first
    assert "Ship the release" in second
    assert len(mocked.calls) == 1
    # Only issues are cached: no token reaches a cache that may be a shared table or Redis.
    assert len(stored) == 1
    assert "ACME-7" in repr(stored)
    assert connection.access_token not in repr(stored)


def test_one_page_view_fetches_at_most_the_site_cap_and_links_the_rest(
    alice_client: Client, alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, settings: Any
) -> None:
    settings.MY_JIRA_MAX_SITES = 2
    sites = [(f"cloud-{n}", f"https://s{n}.atlassian.net", f"Site {n}") for n in range(3)]
    connection = make_connection(alice, sites=sites)
    for cloud_id, _url, _name in sites:
        mocked.post(search_url(cloud_id), json=page(issue(f"{cloud_id.upper()}-1")))

    html = alice_client.get(PAGE).content.decode()

    assert len(mocked.calls) == 2
    last = connection.sites.get(cloud_id="cloud-2")
    assert "Show this site's issues" in html
    assert f"?site={last.pk}" in html
    assert alice_client.get(PAGE, {"site": last.pk}).status_code == 200
    assert len(mocked.calls) == 3
