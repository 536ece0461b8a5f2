"""No code, token or client secret the sandbox issued shows up anywhere it could leak.

The portal runs its real paths against the sandbox (a consent through the sandbox's
own consent page, rotations, a lost reply, a failing token endpoint, a Jira call, a
revoked grant, a refresh_tokens process), then everything an operator or attacker
could read is scanned for every secret the sandbox ever issued (GET /_sandbox/secrets):
logs at DEBUG (SQL included), the refresh_tokens process's stdout/stderr, the user's
pages, the admin pages as a superuser, error reports built with DEBUG off for
exceptions inside the refresh and API paths, and every raw column of the integration
tables. The other proof suites scan their own logs and rows the same way.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pytest
import requests
from django.test import Client
from django.views.debug import ExceptionReporter
from requests.adapters import HTTPAdapter

from accounts.models import User
from integrations.lifecycle.access import jira_for
from integrations.lifecycle.refresh import RefreshOutcome, connection_refresh_for_access
from integrations.models import ConnectionEvent, JiraConnection
from sandbox.testing import approve
from tests.proof.harness import StartSandbox, needs_reconnect, refresh_tokens, seed_connections
from tests.support.accounts import login_verified
from tests.support.oauth import CALLBACK_PATH, CONNECT_PATH
from tests.support.processes import log_texts
from tests.support.secrets import assert_no_secrets, logging_everything, raw_rows

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def everything_logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with logging_everything(caplog) as captured:
        yield captured


def connect_through_the_sandbox(client: Client) -> dict[str, bytes]:
    """Connect as a browser would: the portal's redirect, the sandbox's consent page, the callback."""
    to_atlassian = client.post(CONNECT_PATH)
    assert to_atlassian.status_code == 302
    with requests.Session() as browser:
        back = approve(browser, to_atlassian["Location"])
    response = client.get(f"{CALLBACK_PATH}?{urlsplit(back).query}")
    assert response.status_code == 302, response.content[:300]
    return {"callback": response.content + response["Location"].encode(), "settings": client.get("/settings/").content}


def error_report(call: Any) -> dict[str, str]:
    """The text and HTML reports Django would mail for the exception `call` raises."""
    try:
        call()
    except RuntimeError:
        reporter = ExceptionReporter(None, *sys.exc_info())
        return {"text": reporter.get_traceback_text(), "html": reporter.get_traceback_html()}
    raise AssertionError("the call did not fail")


def test_no_issued_secret_in_logs_pages_error_reports_or_raw_columns(
    start_sandbox: StartSandbox,
    logs: Path,
    everything_logged: pytest.LogCaptureFixture,
    alice: User,
    staff: User,
    settings: Any,
) -> None:
    sandbox = start_sandbox(leeway=600)
    user = Client()
    user.force_login(alice)
    texts: dict[str, str] = {}

    pages = connect_through_the_sandbox(user)
    connection = JiraConnection.objects.get(user=alice)
    # Rotations; a reply lost after Atlassian rotated (retried inside the leeway); a failure.
    assert connection_refresh_for_access(connection_id=connection.pk, rejected=True).outcome == RefreshOutcome.REFRESHED
    sandbox.faults({"token": {"kinds": ["lost_response"], "count": 1}})
    assert connection_refresh_for_access(connection_id=connection.pk, rejected=True).outcome == RefreshOutcome.REFRESHED
    sandbox.faults({"token": {"kinds": ["500"], "count": 1}})
    failed = connection_refresh_for_access(connection_id=connection.pk, rejected=True)
    assert failed.outcome == RefreshOutcome.TRANSIENT_FAILURE
    sandbox.faults({})
    site = next(jira_for(alice))
    assert site.client.myself()["accountId"] == connection.account_id
    pages["my_jira"] = user.get("/jira/").content

    # A background run in its own process, one of its users having revoked the app.
    seeded = seed_connections(sandbox, 10)
    sandbox.revoke(seeded.account_of[seeded.ids[0]])
    run = refresh_tokens(sandbox, logs, "background", "--concurrency", "4")
    assert (run.returncode, run.summary["refreshed"]) == (0, 9)
    assert needs_reconnect(seeded.ids) == {seeded.ids[0]}

    # Support staff's pages: every list and every connection's and event's own page.
    admin = Client()
    login_verified(admin, staff)
    urls = ["/admin/integrations/jiraconnection/", "/admin/integrations/connectionevent/"]
    urls += [
        f"/admin/integrations/jiraconnection/{pk}/change/" for pk in JiraConnection.objects.values_list("pk", flat=True)
    ]
    urls += [
        f"/admin/integrations/connectionevent/{pk}/change/"
        for pk in ConnectionEvent.objects.values_list("pk", flat=True)
    ]
    for url in urls:
        response = admin.get(url)
        assert response.status_code == 200, url
        pages[url] = response.content

    # Error reports with DEBUG off, for crashes deep inside the refresh and API paths
    # (the HTML report lists every frame's local variables).
    settings.DEBUG = False
    # The failure above left a backoff, which the access path honours: end it.
    JiraConnection.objects.filter(pk=connection.pk).update(next_attempt_at=None)
    # Raised at the bottom of requests, below every frame that held a token or the secret.
    with mock.patch.object(HTTPAdapter, "send", side_effect=RuntimeError("network stack exploded")):
        reports = {
            "refresh": error_report(lambda: connection_refresh_for_access(connection_id=connection.pk, rejected=True)),
            "api": error_report(lambda: site.client.myself()),
        }
    for name, report in reports.items():
        # Real reports, through the frames that held the tokens, with the values masked.
        assert "network stack exploded" in report["text"]
        assert "_send" in report["html"]
        assert "requests/sessions.py" in report["html"]
        assert "********************" in report["html"], name
        texts.update({f"report-{name}.txt": report["text"], f"report-{name}.html": report["html"]})
    assert "connection_refresh" in reports["refresh"]["html"]
    assert "refresh_token" in reports["refresh"]["html"]

    texts.update(log_texts(logs))
    texts.update({name: page.decode("utf-8", "replace") for name, page in pages.items()})
    texts["caplog"] = everything_logged.text
    texts["database"] = raw_rows(
        ["integrations_jiraconnection", "integrations_jirasite", "integrations_connectionevent", "django_admin_log"]
    )
    secrets = sandbox.issued_secrets()
    # The scan has something to find: the consent's code, and tokens of every kind.
    assert len(secrets) > 30
    # The SQL that wrote the tokens was captured, with its parameters.
    assert any(
        r.name == "django.db.backends" and 'UPDATE "integrations_jiraconnection"' in r.getMessage()
        for r in everything_logged.records
    )
    assert_no_secrets(texts, *secrets)
