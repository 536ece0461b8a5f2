"""atlassian.JiraClient over a real connection: tokens, 401 retry, 429/503 retries, errors."""

from __future__ import annotations

import json
from datetime import timedelta
from email.utils import format_datetime
from typing import Any
from unittest import mock

import pytest
import responses

from accounts.models import User
from integrations import atlassian
from integrations.lifecycle.access import CLAIM_POLL_SECONDS, ConnectionUnusableError, jira_for
from integrations.models import ConnectionStatus, JiraConnection
from tests.support.atlassian import API, TOKEN_URL, token_calls, token_reply
from tests.support.clock import FakeClock
from tests.support.connections import ConnectionFactory, fresh

pytestmark = pytest.mark.django_db

CLOUD = "11111111-2222-3333-4444-555555555555"
BASE = f"{API}/ex/jira/{CLOUD}/rest/api/3"
MYSELF_URL = f"{BASE}/myself"
SEARCH_URL = f"{BASE}/search/jql"
SCOPE_401 = {"code": 401, "message": "Unauthorized; scope does not match"}


@pytest.fixture
def connection(alice: User, make_connection: ConnectionFactory, frozen: FakeClock) -> JiraConnection:
    return make_connection(
        alice,
        access_token="old-access-secret",
        refresh_token="old-refresh-secret",
        access_token_expires_at=frozen.now() + timedelta(minutes=30),
        sites=[(CLOUD, "https://acme.atlassian.net", "Acme")],
    )


@pytest.fixture
def client(connection: JiraConnection) -> atlassian.JiraClient:
    [site] = list(jira_for(connection.user))
    return site.client


def bearer(call: Any) -> str:
    return str(call.request.headers["Authorization"])


def api_calls(mocked: responses.RequestsMock) -> list[Any]:
    return [call for call in mocked.calls if call.request.url != TOKEN_URL]


def test_call_uses_the_stored_token_at_the_exact_url(
    client: atlassian.JiraClient, mocked: responses.RequestsMock
) -> None:
    mocked.get(MYSELF_URL, json={"accountId": "557058:abc", "displayName": "Alice"})

    assert client.myself()["displayName"] == "Alice"

    [call] = mocked.calls
    assert bearer(call) == "Bearer old-access-secret"
    assert call.request.headers["Accept"] == "application/json"


def test_token_past_its_stored_expiry_is_refreshed_before_the_call(
    client: atlassian.JiraClient, connection: JiraConnection, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    # Stored expiries stand a minute before Atlassian's (atlassian.EXPIRY_MARGIN).
    JiraConnection.objects.filter(pk=connection.pk).update(access_token_expires_at=frozen.now())
    mocked.post(TOKEN_URL, json=token_reply(1))
    mocked.get(MYSELF_URL, json={"accountId": "557058:abc"})

    client.myself()

    assert [call.request.url for call in mocked.calls] == [TOKEN_URL, MYSELF_URL]
    assert bearer(mocked.calls[1]) == "Bearer new-access-1-secret"


def test_401_refreshes_once_and_retries_once_with_the_new_token(
    client: atlassian.JiraClient, connection: JiraConnection, mocked: responses.RequestsMock
) -> None:
    mocked.get(MYSELF_URL, status=401, json={"code": 401, "message": "Unauthorized"})
    mocked.post(TOKEN_URL, json=token_reply(1))
    mocked.get(MYSELF_URL, json={"accountId": "557058:abc"})

    assert client.myself() == {"accountId": "557058:abc"}

    assert [call.request.url for call in mocked.calls] == [MYSELF_URL, TOKEN_URL, MYSELF_URL]
    assert [bearer(c) for c in api_calls(mocked)] == ["Bearer old-access-secret", "Bearer new-access-1-secret"]
    assert token_calls(mocked)[0]["refresh_token"] == "old-refresh-secret"
    assert fresh(connection).refresh_token == "new-refresh-1-secret"


def test_a_second_401_raises_without_another_refresh(
    client: atlassian.JiraClient, mocked: responses.RequestsMock
) -> None:
    mocked.get(MYSELF_URL, status=401, json={})
    mocked.post(TOKEN_URL, json=token_reply(1))
    mocked.post(TOKEN_URL, json=token_reply(2))

    with pytest.raises(atlassian.UnauthorizedError):
        client.myself()

    assert len(token_calls(mocked)) == 1
    assert len(api_calls(mocked)) == 2


def test_scope_mismatch_401_never_refreshes(client: atlassian.JiraClient, mocked: responses.RequestsMock) -> None:
    mocked.get(MYSELF_URL, status=401, json=SCOPE_401)
    mocked.post(TOKEN_URL, json=token_reply(1))

    with pytest.raises(atlassian.ScopeMismatchError):
        client.myself()

    assert len(token_calls(mocked)) == 0
    assert len(api_calls(mocked)) == 1


def test_401_when_the_grant_is_dead_marks_needs_reconnect_and_raises_permanently(
    client: atlassian.JiraClient, connection: JiraConnection, mocked: responses.RequestsMock
) -> None:
    mocked.get(MYSELF_URL, status=401, json={})
    mocked.post(TOKEN_URL, status=403, json={"error": "invalid_grant"})

    with pytest.raises(ConnectionUnusableError) as caught:
        client.myself()

    assert caught.value.permanent is True
    assert fresh(connection).status == ConnectionStatus.NEEDS_RECONNECT
    assert len(api_calls(mocked)) == 1


def test_401_while_another_worker_refreshes_waits_and_uses_its_token(
    client: atlassian.JiraClient, connection: JiraConnection, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    def other_worker_claims(request: Any) -> tuple[int, dict[str, str], str]:
        JiraConnection.objects.filter(pk=connection.pk).update(
            claim_id="6f1c3a52-0000-4000-8000-000000000001", claimed_until=frozen.now() + timedelta(minutes=1)
        )
        return 401, {}, "{}"

    def other_worker_finishes() -> None:
        JiraConnection.objects.filter(pk=connection.pk).update(
            access_token="their-access-secret", claim_id=None, claimed_until=None
        )

    mocked.add_callback(responses.GET, MYSELF_URL, callback=other_worker_claims)
    mocked.get(MYSELF_URL, json={"accountId": "557058:abc"})
    frozen.on_sleep.append(other_worker_finishes)

    client.myself()

    assert frozen.sleeps == [CLAIM_POLL_SECONDS]
    assert len(token_calls(mocked)) == 0
    assert bearer(api_calls(mocked)[1]) == "Bearer their-access-secret"


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured_through_the_sleep_seam(
    client: atlassian.JiraClient, mocked: responses.RequestsMock, frozen: FakeClock, status: int
) -> None:
    mocked.get(MYSELF_URL, status=status, headers={"Retry-After": "7"}, json={})
    mocked.get(MYSELF_URL, status=status, headers={"Retry-After": "2"}, json={})
    mocked.get(MYSELF_URL, json={"accountId": "557058:abc"})

    assert client.myself() == {"accountId": "557058:abc"}

    assert frozen.sleeps == [7.0, 2.0]
    assert len(mocked.calls) == 3


def test_retry_after_as_an_http_date_is_honoured(
    client: atlassian.JiraClient, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    when = format_datetime(frozen.now() + timedelta(seconds=12), usegmt=True)
    mocked.get(MYSELF_URL, status=429, headers={"Retry-After": when}, json={})
    mocked.get(MYSELF_URL, json={"accountId": "557058:abc"})

    client.myself()

    assert frozen.sleeps == [12.0]


def test_retries_are_bounded(client: atlassian.JiraClient, mocked: responses.RequestsMock, frozen: FakeClock) -> None:
    for _ in range(5):
        mocked.get(MYSELF_URL, status=429, headers={"Retry-After": "1"}, json={})

    with pytest.raises(atlassian.RateLimitedError) as caught:
        client.myself()

    assert caught.value.retry_after == 1.0
    assert frozen.sleeps == [1.0] * atlassian.JiraClient.MAX_RETRIES
    assert len(mocked.calls) == atlassian.JiraClient.MAX_RETRIES + 1


def test_without_retry_after_backoff_is_exponential_from_5_seconds_capped_at_30(
    client: atlassian.JiraClient, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    for _ in range(3):
        mocked.get(MYSELF_URL, status=503, body="<html>busy</html>")
    mocked.get(MYSELF_URL, json={})

    with mock.patch("integrations.atlassian.jira.random.uniform", return_value=1.3):
        client.myself()
        assert client._delay(3, None) == 30.0

    assert frozen.sleeps == [6.5, 13.0, 26.0]


def test_a_long_retry_after_is_handed_to_the_caller_not_slept_through(
    client: atlassian.JiraClient, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    mocked.get(MYSELF_URL, status=429, headers={"Retry-After": "120"}, json={})

    with pytest.raises(atlassian.RateLimitedError) as caught:
        client.myself()

    assert caught.value.retry_after == 120.0
    assert frozen.sleeps == []


def test_non_idempotent_calls_are_not_retried(
    client: atlassian.JiraClient, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    mocked.post(f"{BASE}/issue", status=429, headers={"Retry-After": "1"}, json={})

    with pytest.raises(atlassian.RateLimitedError):
        client.request("POST", "issue", json={"fields": {}})

    assert frozen.sleeps == []
    assert len(mocked.calls) == 1


def test_search_post_is_retried_as_idempotent(
    client: atlassian.JiraClient, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    mocked.post(SEARCH_URL, status=429, headers={"Retry-After": "3"}, json={})
    mocked.post(SEARCH_URL, json={"issues": [], "isLast": True})

    page = client.search_jql(jql="assignee = currentUser()", fields=["summary"])

    assert (page.issues, page.is_last) == ([], True)
    assert frozen.sleeps == [3.0]


@pytest.mark.parametrize(
    ("status", "body", "error", "message"),
    [
        (404, {"errorMessages": ["Issue does not exist"]}, atlassian.ApiError, "HTTP 404: Issue does not exist"),
        (400, {"errorMessages": ["bad JQL"]}, atlassian.ApiError, "HTTP 400: bad JQL"),
        (403, {}, atlassian.ApiError, "HTTP 403"),
        (410, {}, atlassian.ApiError, "HTTP 410"),
        (500, {}, atlassian.TransientError, "HTTP 500"),
        (502, {}, atlassian.TransientError, "HTTP 502"),
    ],
)
def test_other_failures_raise_typed_errors_without_retry(
    client: atlassian.JiraClient,
    mocked: responses.RequestsMock,
    frozen: FakeClock,
    status: int,
    body: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    mocked.get(MYSELF_URL, status=status, json=body)

    with pytest.raises(error, match=message) as caught:
        client.myself()

    assert getattr(caught.value, "status", None) == status
    assert len(mocked.calls) == 1
    assert frozen.sleeps == []


def test_non_json_success_is_an_invalid_response(client: atlassian.JiraClient, mocked: responses.RequestsMock) -> None:
    mocked.get(MYSELF_URL, body="<html>login</html>")

    with pytest.raises(atlassian.InvalidResponseError):
        client.myself()


def test_iter_issues_follows_next_page_tokens(client: atlassian.JiraClient, mocked: responses.RequestsMock) -> None:
    issue = {"id": "1", "key": "ACME-1", "fields": {"summary": "First", "status": {"name": "To Do"}}}
    mocked.post(SEARCH_URL, json={"issues": [issue], "nextPageToken": "page-2", "isLast": False})
    mocked.post(SEARCH_URL, json={"issues": [{**issue, "id": "2", "key": "ACME-2"}], "isLast": True})

    keys = [i.key for i in client.iter_issues(jql="project = ACME", fields=["summary", "status"], page_size=1)]

    assert keys == ["ACME-1", "ACME-2"]
    bodies = [json.loads(call.request.body) for call in mocked.calls]
    assert bodies[0] == {"jql": "project = ACME", "fields": ["summary", "status"], "maxResults": 1}
    assert bodies[1]["nextPageToken"] == "page-2"
