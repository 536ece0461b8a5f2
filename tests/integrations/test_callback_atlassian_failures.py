"""Atlassian says no, or answers badly: a plain page, never a 500, nothing written."""

from __future__ import annotations

import re

import pytest
import responses

from accounts.models import User
from tests.support.accounts import logged_in
from tests.support.atlassian import token_calls
from tests.support.oauth import (
    READ_FAILURES,
    TOKEN_FAILURES,
    Failure,
    callback,
    connect_failing,
    pending_states,
    register_success,
    row_counts,
    start_flow,
)


def _assert_our_error_page(content: bytes, *, says: str) -> None:
    # Our template, not Django's bare "Server Error (500)" nor a traceback.
    assert b'<section class="card narrow" role="alert">' in content
    assert b"Back to settings" in content
    assert says.encode() in content
    assert b"Traceback" not in content


@pytest.mark.parametrize("failure", TOKEN_FAILURES, ids=[f.id for f in TOKEN_FAILURES])
def test_token_endpoint_failure_shows_a_plain_page_and_writes_nothing(
    alice: User, mocked: responses.RequestsMock, failure: Failure
) -> None:
    client = logged_in(alice)

    response = connect_failing(client, mocked, failure)

    assert response.status_code == failure.status
    _assert_our_error_page(response.content, says=failure.says)
    assert row_counts() == (0, 0, 0)
    # The exchange failed, so nothing else went out with a token.
    assert len(token_calls(mocked)) == 1
    assert len(mocked.calls) == 1
    # Spent even on a 5xx answer (SessionMiddleware does not save those).
    assert pending_states(client) == {}


def test_missing_refresh_token_tells_the_operator_about_offline_access(
    alice: User, mocked: responses.RequestsMock
) -> None:
    failure = next(f for f in TOKEN_FAILURES if f.id == "no-refresh-token")

    response = connect_failing(logged_in(alice), mocked, failure)

    assert b"add offline_access to ATLASSIAN_SCOPES" in response.content
    assert b"tell the portal&#x27;s operator" in response.content
    # Starting again would fail the same way: no such button.
    assert b"Start again" not in response.content


def test_an_expired_code_offers_to_start_again(alice: User, mocked: responses.RequestsMock) -> None:
    response = connect_failing(logged_in(alice), mocked, TOKEN_FAILURES[0])

    assert b"Start again" in response.content


@pytest.mark.parametrize("failure", READ_FAILURES, ids=[f.id for f in READ_FAILURES])
def test_sites_or_identity_failure_shows_a_plain_page_and_writes_nothing(
    alice: User, mocked: responses.RequestsMock, failure: Failure
) -> None:
    response = connect_failing(logged_in(alice), mocked, failure)

    assert response.status_code == failure.status
    _assert_our_error_page(response.content, says=failure.says)
    assert b"Nothing was saved" in response.content
    assert row_counts() == (0, 0, 0)
    assert len(token_calls(mocked)) == 1


def test_declined_consent_returns_to_settings_with_a_message(alice: User, mocked: responses.RequestsMock) -> None:
    register_success(mocked)
    client = logged_in(alice)
    state = start_flow(client)

    response = callback(client, error="access_denied", error_description="User denied", state=state)

    assert response.status_code == 302
    assert response["Location"] == "/settings/"
    page = client.get("/settings/")
    assert "You declined to connect Jira. Nothing was changed." in page.content.decode()
    assert len(mocked.calls) == 0
    assert row_counts() == (0, 0, 0)
    assert state not in pending_states(client)


@pytest.mark.parametrize("error", ["access_denied", "server_error", "<b>odd</b>"])
def test_provider_text_is_escaped_truncated_and_stripped_of_nul(
    alice: User, mocked: responses.RequestsMock, error: str
) -> None:
    register_success(mocked)
    client = logged_in(alice)
    description = "<script>alert(1)</script> went\x00wrong " + "A" * 10_240

    response = client.get(
        "/integrations/jira/callback/",
        {"error": error, "error_description": description, "state": start_flow(client)},
        follow=True,
    )

    assert response.status_code == 200
    html = response.content.decode()
    assert "<script>alert(1)" not in html
    assert "<b>odd</b>" not in html
    assert "\x00" not in html
    assert "A" * 300 not in html
    if error != "access_denied":
        assert "&lt;script&gt;alert(1)&lt;/script&gt; wentwrong" in html
        assert "AAAA…" in html
    assert len(mocked.calls) == 0
    assert row_counts() == (0, 0, 0)


def test_unknown_error_from_atlassian_is_reported_not_swallowed(alice: User, mocked: responses.RequestsMock) -> None:
    client = logged_in(alice)

    response = client.get(
        "/integrations/jira/callback/",
        {"error": "invalid_scope", "error_description": "scope is not allowed", "state": start_flow(client)},
        follow=True,
    )

    html = response.content.decode()
    assert "Atlassian could not complete the connection (invalid_scope): scope is not allowed" in html
    assert len(mocked.calls) == 0


def test_a_link_in_atlassians_error_text_is_shown_as_plain_text(alice: User, mocked: responses.RequestsMock) -> None:
    client = logged_in(alice)

    response = client.get(
        "/integrations/jira/callback/",
        {
            "error": "server_error",
            "error_description": "Visit https://evil.example/fix or www.evil.example now",
            "state": start_flow(client),
        },
        follow=True,
    )

    html = response.content.decode()
    assert "Visit https://evil.example/fix or www.evil.example now" in html
    assert "evil.example" not in "".join(re.findall(r"<a [^>]*>", html))
