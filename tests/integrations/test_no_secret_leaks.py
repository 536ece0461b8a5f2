"""No code, token or client secret in logs, pages or error reports, on any path."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Iterator
from io import StringIO
from typing import Any

import pytest
import responses
from cryptography.fernet import Fernet
from django.conf import settings
from django.core import mail
from django.core.handlers.wsgi import WSGIRequest
from django.core.management import call_command
from django.core.signals import got_request_exception
from django.test import Client, override_settings
from django.views.debug import ExceptionReporter

from accounts.models import User
from integrations.models import ConnectionStatus, JiraConnection
from tests.support.accounts import logged_in, login_verified
from tests.support.atlassian import TOKEN_URL
from tests.support.connections import tamper
from tests.support.oauth import (
    ACCESS_TOKEN,
    CALLBACK_PATH,
    CODE,
    FAILED_CALLBACKS,
    ROTATED_ACCESS_TOKEN,
    ROTATED_REFRESH_TOKEN,
    SITE_A,
    SITE_B,
    SITE_C,
    Scenario,
    callback,
    connect,
    connect_reply,
    everything_logged,
    register_success,
    secrets_in_play,
    start_flow,
)
from tests.support.secrets import assert_no_secrets

Path = Callable[[Client, responses.RequestsMock], list[bytes]]
ADMIN_CONNECTIONS = "/admin/integrations/jiraconnection/"


def _connected_with(sites: list[dict[str, Any]] | None) -> Path:
    def path(client: Client, mocked: responses.RequestsMock) -> list[bytes]:
        return [connect(client, mocked, sites=sites).content, client.get("/settings/").content]

    return path


_success = _connected_with(None)


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


def _page_of(scenario: Scenario) -> Path:
    def path(client: Client, mocked: responses.RequestsMock) -> list[bytes]:
        return [scenario(client, mocked).content]

    return path


def _replayed(client: Client, mocked: responses.RequestsMock) -> list[bytes]:
    register_success(mocked)
    state = start_flow(client)
    return [callback(client, code=CODE, state=state).content, callback(client, code=CODE, state=state).content]


def _atlassian_reports(error: str, description: str) -> Path:
    """Atlassian redirects back with an error; the settings page then shows a message."""

    def path(client: Client, mocked: responses.RequestsMock) -> list[bytes]:
        query = {"code": CODE, "error": error, "error_description": description, "state": start_flow(client)}
        return [client.get(CALLBACK_PATH, query, follow=True).content]

    return path


def _mail_texts() -> list[bytes]:
    return [f"{m.subject}\n{m.body}".encode() for m in mail.outbox]


def _staff_refresh_now(client: Client, mocked: responses.RequestsMock) -> list[bytes]:
    pages = _success(client, mocked)
    connection = JiraConnection.objects.get()
    mocked.reset()
    rotated = connect_reply(access_token=ROTATED_ACCESS_TOKEN, refresh_token=ROTATED_REFRESH_TOKEN)
    mocked.add(responses.POST, TOKEN_URL, json=rotated)
    staff = login_verified(Client(), User.objects.create_superuser("support@example.com", "staff horse battery staple"))
    action = {"action": "refresh_now", "index": "0", "_selected_action": [str(connection.pk)]}
    pages.append(staff.post(ADMIN_CONNECTIONS, action, follow=True).content)
    pages.append(staff.get(f"{ADMIN_CONNECTIONS}{connection.pk}/change/").content)
    pages.append(staff.get("/admin/integrations/connectionevent/").content)
    # The path did what it says: the rotated pair went through the code under watch.
    assert JiraConnection.objects.get().refresh_token == ROTATED_REFRESH_TOKEN
    return pages


def _rotate_keys(client: Client, mocked: responses.RequestsMock, *, tampered: bool) -> list[bytes]:
    pages = _success(client, mocked)
    connection = JiraConnection.objects.get()
    if tampered:
        tamper(connection.pk, "refresh_token")
    out = StringIO()
    with override_settings(FERNET_KEYS=[Fernet.generate_key().decode(), *settings.FERNET_KEYS]):
        call_command("rotate_token_keys", stdout=out)
        stored = JiraConnection.objects.get()
        pages.append(client.get("/settings/").content)
    # The path did what it says: read every token, and rotated or flagged this one.
    assert stored.access_token == ACCESS_TOKEN
    assert f"unreadable: {int(tampered)}," in out.getvalue()
    assert stored.status == (ConnectionStatus.NEEDS_RECONNECT if tampered else ConnectionStatus.ACTIVE)
    return [*pages, out.getvalue().encode(), *_mail_texts()]


def _keys_rotated(client: Client, mocked: responses.RequestsMock) -> list[bytes]:
    return _rotate_keys(client, mocked, tampered=False)


def _tampered_token_met_by_rotation(client: Client, mocked: responses.RequestsMock) -> list[bytes]:
    return _rotate_keys(client, mocked, tampered=True)


PATHS: dict[str, Path] = {
    "success": _success,
    "no-sites": _connected_with([]),
    "three-sites": _connected_with([SITE_A, SITE_B, SITE_C]),
    "reconnect-toggle-disconnect": _reconnect_then_disconnect,
    "replayed-state": _replayed,
    "declined": _atlassian_reports("access_denied", f"denied {CODE}"),
    "provider-error-script-10kb": _atlassian_reports("server_error", "<script>alert(1)</script> " + "A" * 10_240),
    **{f"callback-{name}": _page_of(scenario) for name, (scenario, _status) in FAILED_CALLBACKS.items()},
    "staff-refresh-now": _staff_refresh_now,
    "keys-rotated": _keys_rotated,
    "tampered-token": _tampered_token_met_by_rotation,
}


@pytest.mark.parametrize("path", PATHS.values(), ids=PATHS.keys())
def test_no_secret_in_logs_or_pages(
    alice: User, mocked: responses.RequestsMock, caplog: pytest.LogCaptureFixture, path: Path
) -> None:
    client = logged_in(alice)

    with everything_logged(caplog) as watch:
        pages = path(client, mocked)

    watch.assert_clean(*(page.decode() for page in pages))


def test_tampered_token_is_logged_by_connection_and_reason_only(
    alice: User, mocked: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    client = logged_in(alice)

    with everything_logged(caplog) as watch:
        pages = _tampered_token_met_by_rotation(client, mocked)

    watch.assert_clean(*(page.decode() for page in pages))
    connection = JiraConnection.objects.get()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"Jira connection {connection.pk} needs reconnect: token_unreadable"]
    assert "unreadable=1" in caplog.text


def test_the_leak_watch_sees_a_leak(alice: User, caplog: pytest.LogCaptureFixture) -> None:
    # The watch must be able to fail: a token logged at DEBUG by any logger is found.
    with everything_logged(caplog) as watch:
        assert User.objects.filter(pk=alice.pk).exists()
        watch.assert_clean()
        logging.getLogger("urllib3.connectionpool").debug("sent %s", ACCESS_TOKEN)

    with pytest.raises(AssertionError, match=re.escape(ACCESS_TOKEN[:12])):
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
    monkeypatch.setattr("integrations.lifecycle.connect._sites_sync", _sites_sync_crash)


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
    assert_no_secrets({"text": text, "html": html, "mail": body}, state)


def test_token_values_used_here_are_the_ones_the_flow_handles() -> None:
    # Guards the helpers: a typo here would make every leak test pass vacuously.
    reply = connect_reply()
    assert {reply["access_token"], reply["refresh_token"], CODE} <= set(secrets_in_play())
    assert "test-client-secret-do-not-log-a8f3c61e9b2d4075e1c9f0a7b3d5e2c4f6" in secrets_in_play()
