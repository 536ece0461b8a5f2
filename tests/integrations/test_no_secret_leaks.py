"""No code, token or client secret in logs, pages or error reports, on any path."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
import responses
from django.core import mail
from django.core.handlers.wsgi import WSGIRequest
from django.core.signals import got_request_exception
from django.test import Client, override_settings
from django.utils import timezone
from django.views.debug import ExceptionReporter

from accounts.models import User
from integrations.models import JiraConnection
from tests.conftest import TOKEN_URL
from tests.integrations.oauth_helpers import (
    ACCESS_TOKEN,
    CODE,
    READ_FAILURES,
    TOKEN_FAILURES,
    Failure,
    callback,
    connect,
    connect_failing,
    everything_logged,
    logged_in,
    register_success,
    secrets_in_play,
    start_flow,
    token_reply,
)

Path = Callable[[Client, responses.RequestsMock], list[bytes]]


def _success(client: Client, mocked: responses.RequestsMock) -> list[bytes]:
    return [connect(client, mocked).content, client.get("/settings/").content]


def _reconnect_then_disconnect(client: Client, mocked: responses.RequestsMock) -> list[bytes]:
    pages = _success(client, mocked)
    mocked.reset()
    pages.append(connect(client, mocked).content)
    connection = JiraConnection.objects.get()
    site = connection.sites.get()
    pages.append(client.post(f"/integrations/jira/sites/{site.pk}/enabled/", {"enabled": "0"}, follow=True).content)
    pages.append(client.get(f"/integrations/jira/connections/{connection.pk}/disconnect/").content)
    pages.append(client.post(f"/integrations/jira/connections/{connection.pk}/disconnect/", follow=True).content)
    return pages


def _failing(failure: Failure) -> Path:
    def path(client: Client, mocked: responses.RequestsMock) -> list[bytes]:
        return [connect_failing(client, mocked, failure).content]

    return path


def _replayed(client: Client, mocked: responses.RequestsMock) -> list[bytes]:
    register_success(mocked)
    state = start_flow(client)
    return [callback(client, code=CODE, state=state).content, callback(client, code=CODE, state=state).content]


def _wrong_state(client: Client, mocked: responses.RequestsMock) -> list[bytes]:
    start_flow(client)
    return [callback(client, code=CODE, state="forged").content, callback(client, code=CODE).content]


def _expired(client: Client, mocked: responses.RequestsMock) -> list[bytes]:
    state = start_flow(client)
    with mock.patch("integrations.clock.now", return_value=timezone.now() + timedelta(minutes=11)):
        return [callback(client, code=CODE, state=state).content]


def _declined(client: Client, mocked: responses.RequestsMock) -> list[bytes]:
    state = start_flow(client)
    response = client.get(
        "/integrations/jira/callback/",
        {"code": CODE, "error": "access_denied", "error_description": f"denied {CODE}", "state": state},
        follow=True,
    )
    return [response.content]


def _logged_out(client: Client, mocked: responses.RequestsMock) -> list[bytes]:
    state = start_flow(client)
    client.logout()
    return [callback(client, code=CODE, state=state).content]


PATHS: dict[str, Path] = {
    "success": _success,
    "reconnect-toggle-disconnect": _reconnect_then_disconnect,
    "replayed-state": _replayed,
    "wrong-or-missing-state": _wrong_state,
    "expired-state": _expired,
    "declined": _declined,
    "logged-out": _logged_out,
    **{f"token-{f.id}": _failing(f) for f in TOKEN_FAILURES},
    **{f"read-{f.id}": _failing(f) for f in READ_FAILURES},
}


@pytest.mark.parametrize("path", PATHS.values(), ids=PATHS.keys())
def test_no_secret_in_logs_or_pages(
    alice: User, mocked: responses.RequestsMock, caplog: pytest.LogCaptureFixture, path: Path
) -> None:
    client = logged_in(alice)

    with everything_logged(caplog) as watch:
        pages = path(client, mocked)

    watch.assert_clean(*(page.decode() for page in pages))


def test_the_leak_watch_sees_a_leak(alice: User, caplog: pytest.LogCaptureFixture) -> None:
    # The watch must be able to fail: a token logged at DEBUG by any logger is found.
    with everything_logged(caplog) as watch:
        assert User.objects.filter(pk=alice.pk).exists()
        watch.assert_clean()
        logging.getLogger("urllib3.connectionpool").debug("sent %s", ACCESS_TOKEN)

    with pytest.raises(AssertionError, match=ACCESS_TOKEN):
        watch.assert_clean()


# --- Error reports (DEBUG off) ----------------------------------------------------------


@pytest.fixture
def reports() -> Iterator[list[str]]:
    """The text and HTML error reports Django builds for the request that failed."""
    built: list[str] = []

    def build(sender: Any, request: WSGIRequest, **kwargs: Any) -> None:
        reporter = ExceptionReporter(request, *sys.exc_info())
        built.extend([reporter.get_traceback_text(), reporter.get_traceback_html()])

    got_request_exception.connect(build)
    yield built
    got_request_exception.disconnect(build)


def _sites_sync_crash(**kwargs: Any) -> None:
    raise RuntimeError("crash mid-connect")


def _crash_after_the_exchange(mocked: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch) -> None:
    # The code and the fresh tokens are then in the callers' frames.
    register_success(mocked)
    monkeypatch.setattr("integrations.services._sites_sync", _sites_sync_crash)


def _crash_inside_the_exchange(mocked: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch) -> None:
    # Raised from inside requests: its frames hold the request body with secret and code.
    mocked.add(responses.POST, TOKEN_URL, body=RuntimeError("crash mid-connect"))


Crash = Callable[[responses.RequestsMock, pytest.MonkeyPatch], None]
CRASHES: list[tuple[str, Crash, str]] = [
    ("after-the-exchange", _crash_after_the_exchange, "token_fields"),
    ("inside-the-exchange", _crash_inside_the_exchange, "requests/sessions.py"),
]


@override_settings(DEBUG=False, ADMINS=[("Ops", "ops@example.com")])
@pytest.mark.parametrize(("case", "crash", "deepest"), CRASHES, ids=[case[0] for case in CRASHES])
def test_error_reports_of_a_crash_hold_no_secret(
    alice: User,
    mocked: responses.RequestsMock,
    reports: list[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    crash: Crash,
    deepest: str,
) -> None:
    client = logged_in(alice)
    client.raise_request_exception = False
    crash(mocked, monkeypatch)
    state = start_flow(client)

    with everything_logged(caplog) as watch:
        response = callback(client, code=CODE, state=state)

    assert response.status_code == 500
    assert JiraConnection.objects.count() == 0
    text, html = reports
    # Real reports of this crash, through the frames that held the secrets (the HTML
    # one lists every frame's variables)...
    for report in (text, html):
        assert "crash mid-connect" in report
        assert "connection_create_from_callback" in report
        assert "/integrations/jira/callback/" in report
    assert deepest in html
    # ...and the one mailed to the admins (AdminEmailHandler).
    assert len(mail.outbox) == 1
    body = mail.outbox[0].body
    assert "crash mid-connect" in body
    watch.assert_clean(text, html, body, mail.outbox[0].subject)
    for report in (text, html, body):
        assert state not in report


def test_token_values_used_here_are_the_ones_the_flow_handles() -> None:
    # Guards the helpers: a typo here would make every leak test pass vacuously.
    reply = token_reply()
    assert {reply["access_token"], reply["refresh_token"], CODE} <= set(secrets_in_play())
    assert "test-client-secret-do-not-log" in secrets_in_play()
