"""The OAuth connect flow as the tests drive it: start a flow, answer as Atlassian, count rows.

Every secret a flow handles has a distinctive value here, so a leak test can search
logs and pages for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY
from django.http import HttpResponse
from django.test import Client
from django.utils import timezone

from accounts.models import User
from integrations import oauth
from integrations.models import ConnectionEvent, JiraConnection, JiraSite
from tests.support.accounts import logged_in
from tests.support.atlassian import AUTHORIZE_URL, ME_URL, RESOURCES_URL, TOKEN_URL, token_reply
from tests.support.secrets import assert_no_secrets, logging_everything

CONNECT_PATH = "/integrations/jira/connect/"
CALLBACK_PATH = "/integrations/jira/callback/"

CODE = "authcode-Zq81-never-logged"
ACCESS_TOKEN = "eyJ-access-token-Kx92-never-logged"
REFRESH_TOKEN = "refresh-token-Wm47-never-logged"
# The pair a later refresh (by the refresh job or by staff) brings.
ROTATED_ACCESS_TOKEN = "eyJ-rotated-access-Pq55-never-logged"
ROTATED_REFRESH_TOKEN = "rotated-refresh-Hv63-never-logged"
ACCOUNT_ID = "557058:6f1c0c51-alice"

SITE_A = {
    "id": "cloud-aaa",
    "name": "Acme",
    "url": "https://acme.atlassian.net",
    "scopes": ["read:jira-work", "read:jira-user"],
    "avatarUrl": "https://site-admin-avatars.atl-paas.net/acme.png",
}
SITE_B = {
    "id": "cloud-bbb",
    "name": "Beta Corp",
    "url": "https://beta.atlassian.net",
    "scopes": ["read:jira-work"],
    "avatarUrl": "https://site-admin-avatars.atl-paas.net/beta.png",
}
SITE_C = {
    "id": "cloud-ccc",
    "name": "Cobalt",
    "url": "https://cobalt.atlassian.net",
    "scopes": ["read:jira-work", "write:jira-work"],
    "avatarUrl": "https://site-admin-avatars.atl-paas.net/cobalt.png",
}


def connect_reply(**overrides: Any) -> dict[str, Any]:
    """The token endpoint's answer to the flow's code exchange (ACCESS_TOKEN, REFRESH_TOKEN)."""
    return token_reply(**{"access_token": ACCESS_TOKEN, "refresh_token": REFRESH_TOKEN, **overrides})


def me_reply(*, account_id: str = ACCOUNT_ID, name: str = "Alice Atlassian") -> dict[str, Any]:
    return {
        "account_id": account_id,
        "name": name,
        "email": "alice@acme.example",
        "picture": "https://avatar-management.services.atlassian.com/alice.png",
        "account_status": "active",
    }


def secrets_in_play() -> list[str]:
    """Values that must never reach a log line, a page or an error report."""
    return [
        CODE,
        ACCESS_TOKEN,
        REFRESH_TOKEN,
        ROTATED_ACCESS_TOKEN,
        ROTATED_REFRESH_TOKEN,
        settings.ATLASSIAN_CLIENT_SECRET,
    ]


def register_success(
    mocked: responses.RequestsMock,
    *,
    sites: list[dict[str, Any]] | None = None,
    me: dict[str, Any] | None = None,
    tokens: dict[str, Any] | None = None,
) -> None:
    mocked.add(responses.POST, TOKEN_URL, json=tokens or connect_reply())
    mocked.add(responses.GET, RESOURCES_URL, json=[SITE_A] if sites is None else sites)
    mocked.add(responses.GET, ME_URL, json=me or me_reply())


def row_counts() -> tuple[int, int, int]:
    return JiraConnection.objects.count(), JiraSite.objects.count(), ConnectionEvent.objects.count()


def start_flow(client: Client) -> str:
    """POST connect as the logged-in user; the state Atlassian would echo back."""
    response = client.post(CONNECT_PATH)
    assert response.status_code == 302, response.content[:500]
    return authorize_params(response["Location"])["state"]


def authorize_params(location: str) -> dict[str, str]:
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == AUTHORIZE_URL
    params = parse_qs(parts.query, keep_blank_values=True, strict_parsing=True)
    assert all(len(values) == 1 for values in params.values()), params
    return {key: values[0] for key, values in params.items()}


def callback(client: Client, **params: str) -> HttpResponse:
    response: HttpResponse = client.get(CALLBACK_PATH, params)
    return response


def pending_states(client: Client) -> dict[str, dict[str, Any]]:
    return dict(client.session.get(oauth.SESSION_KEY) or {})


def connect(client: Client, mocked: responses.RequestsMock, **register: Any) -> HttpResponse:
    """One whole successful flow: connect, Atlassian answers, callback."""
    register_success(mocked, **register)
    return callback(client, code=CODE, state=start_flow(client))


def hand_session_to(client: Client, user: User) -> Client:
    """The same browser session, signed in as `user` now, without a login (which would
    flush the session and the pending states with it)."""
    session = client.session
    session[SESSION_KEY] = str(user.pk)
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return client


def another_browser(client: Client) -> Client:
    """A second browser session of the user `client` is signed in as."""
    return logged_in(User.objects.get(pk=client.session[SESSION_KEY]))


@dataclass(frozen=True)
class LeakWatch:
    """Every record of every logger at DEBUG, the SQL the flow ran included."""

    caplog: pytest.LogCaptureFixture

    def assert_clean(self, *texts: str) -> None:
        """No secret in the captured logs, nor in `texts` (pages, reports, mails)."""
        assert any(r.name == "django.db.backends" for r in self.caplog.records), "the watch is not listening"
        captured = {"logs": self.caplog.text, **{f"text-{n}": text for n, text in enumerate(texts, 1)}}
        assert_no_secrets(captured, *secrets_in_play())


@contextmanager
def everything_logged(caplog: pytest.LogCaptureFixture) -> Iterator[LeakWatch]:
    # SQL is logged too (django.db.backends): tokens must reach it only as ciphertext.
    with logging_everything(caplog):
        yield LeakWatch(caplog)


@dataclass(frozen=True)
class Failure:
    """One way Atlassian can fail a connect, and the page the user must get for it."""

    id: str
    url: str
    reply: dict[str, Any]
    status: int
    says: str
    method: str = responses.GET


def _html(status: int) -> dict[str, Any]:
    return {
        "status": status,
        "body": "<html><body><h1>Something went wrong</h1></body></html>",
        "content_type": "text/html",
    }


_no_refresh = connect_reply(refresh_token=None)
_no_access = connect_reply(access_token=None)

TOKEN_FAILURES = [
    Failure(
        "code-invalid-400",
        TOKEN_URL,
        {"status": 400, "json": {"error": "invalid_request", "error_description": "authorization_code is invalid"}},
        400,
        "Atlassian no longer accepts this sign-in",
        responses.POST,
    ),
    Failure(
        "client-credentials-401",
        TOKEN_URL,
        {"status": 401, "json": {"error": "access_denied", "error_description": "Unauthorized"}},
        502,
        "Atlassian refused this portal&#x27;s app credentials",
        responses.POST,
    ),
    Failure(
        "invalid-grant-403",
        TOKEN_URL,
        {"status": 403, "json": {"error": "invalid_grant", "error_description": "Unknown or invalid code."}},
        400,
        "Atlassian no longer accepts this sign-in",
        responses.POST,
    ),
    Failure("server-error-500", TOKEN_URL, {"status": 500}, 502, "token endpoint failed (HTTP 500)", responses.POST),
    Failure("html-502", TOKEN_URL, _html(502), 502, "token endpoint failed (HTTP 502)", responses.POST),
    Failure("html-200", TOKEN_URL, _html(200), 502, "token reply was not JSON", responses.POST),
    Failure(
        "non-json-200",
        TOKEN_URL,
        {"status": 200, "body": "access_token=nope", "content_type": "text/plain"},
        502,
        "token reply was not JSON",
        responses.POST,
    ),
    Failure("no-refresh-token", TOKEN_URL, {"json": _no_refresh}, 502, "offline_access", responses.POST),
    Failure("no-access-token", TOKEN_URL, {"json": _no_access}, 502, "has no access_token", responses.POST),
    Failure(
        "timeout",
        TOKEN_URL,
        {"body": requests.exceptions.ReadTimeout()},
        504,
        "Atlassian did not answer in time",
        responses.POST,
    ),
    Failure(
        "connection-error",
        TOKEN_URL,
        {"body": requests.exceptions.ConnectionError()},
        504,
        "Could not reach Atlassian",
        responses.POST,
    ),
]

# The token exchange worked; reading the sites or the identity did not.
READ_FAILURES = [
    Failure("resources-500", RESOURCES_URL, {"status": 500}, 502, "Atlassian answered HTTP 500"),
    Failure("resources-not-a-list", RESOURCES_URL, {"json": {"sites": []}}, 502, "did not return a list"),
    Failure(
        "me-401",
        ME_URL,
        {"status": 401, "json": {"code": 401, "message": "Unauthorized"}},
        502,
        "refused the access token",
    ),
    Failure("me-500", ME_URL, {"status": 500}, 502, "Atlassian answered HTTP 500"),
    Failure("me-without-account-id", ME_URL, {"json": {"name": "Alice"}}, 502, "/me did not return an account_id"),
]


def register_failure(mocked: responses.RequestsMock, failure: Failure) -> None:
    """Atlassian fails as `failure` says; the other calls of the flow succeed."""
    mocked.add(failure.method, failure.url, **failure.reply)
    for method, url, reply in (
        (responses.POST, TOKEN_URL, {"json": connect_reply()}),
        (responses.GET, RESOURCES_URL, {"json": [SITE_A]}),
        (responses.GET, ME_URL, {"json": me_reply()}),
    ):
        if url != failure.url:
            mocked.add(method, url, **reply)


def connect_failing(client: Client, mocked: responses.RequestsMock, failure: Failure) -> HttpResponse:
    """One whole flow in which Atlassian fails as `failure` says."""
    register_failure(mocked, failure)
    return callback(client, code=CODE, state=start_flow(client))


# --- Callbacks that end without a connection -----------------------------------------------

Scenario = Callable[[Client, responses.RequestsMock], HttpResponse]


def _forged_state(client: Client, mocked: responses.RequestsMock) -> HttpResponse:
    start_flow(client)
    return callback(client, code=CODE, state="forged")


def _missing_state(client: Client, mocked: responses.RequestsMock) -> HttpResponse:
    start_flow(client)
    return callback(client, code=CODE)


def _empty_state(client: Client, mocked: responses.RequestsMock) -> HttpResponse:
    start_flow(client)
    return callback(client, code=CODE, state="")


def _expired_state(client: Client, mocked: responses.RequestsMock) -> HttpResponse:
    state = start_flow(client)
    with mock.patch("integrations.clock.now", return_value=timezone.now() + timedelta(minutes=11)):
        return callback(client, code=CODE, state=state)


def _other_users_state(client: Client, mocked: responses.RequestsMock) -> HttpResponse:
    state = start_flow(client)
    mallory = User.objects.create_user("mallory@example.com", "mallory horse battery staple")
    return callback(hand_session_to(client, mallory), code=CODE, state=state)


def _other_sessions_state(client: Client, mocked: responses.RequestsMock) -> HttpResponse:
    state = start_flow(client)
    return callback(another_browser(client), code=CODE, state=state)


def _no_code(client: Client, mocked: responses.RequestsMock) -> HttpResponse:
    return callback(client, state=start_flow(client))


def _logged_out(client: Client, mocked: responses.RequestsMock) -> HttpResponse:
    state = start_flow(client)
    client.logout()
    return callback(client, code=CODE, state=state)


def _declined(client: Client, mocked: responses.RequestsMock) -> HttpResponse:
    return callback(client, code=CODE, error="access_denied", error_description="denied", state=start_flow(client))


def _atlassian_fails(failure: Failure) -> Scenario:
    def scenario(client: Client, mocked: responses.RequestsMock) -> HttpResponse:
        return connect_failing(client, mocked, failure)

    return scenario


# Each way, run by a signed-in user on a fresh client, and the status it answers with.
FAILED_CALLBACKS: dict[str, tuple[Scenario, int]] = {
    "forged-state": (_forged_state, 400),
    "missing-state": (_missing_state, 400),
    "empty-state": (_empty_state, 400),
    "expired-state": (_expired_state, 400),
    "other-users-state": (_other_users_state, 400),
    "other-sessions-state": (_other_sessions_state, 400),
    "no-code": (_no_code, 400),
    "logged-out": (_logged_out, 403),
    "declined": (_declined, 302),
    **{f"token-{f.id}": (_atlassian_fails(f), f.status) for f in TOKEN_FAILURES},
    **{f"read-{f.id}": (_atlassian_fails(f), f.status) for f in READ_FAILURES},
}
