"""POST /integrations/jira/connect/: state issued, then off to Atlassian's consent page."""

from __future__ import annotations

from unittest import mock

from django.test import Client, override_settings
from django.utils import timezone

from accounts.models import User
from integrations import oauth
from tests.support.accounts import logged_in
from tests.support.oauth import CONNECT_PATH, authorize_params, callback, pending_states, start_flow

REDIRECT_URI = "https://portal.example/integrations/jira/callback/"


def test_connect_redirects_to_atlassian_consent_with_every_parameter(alice: User) -> None:
    client = logged_in(alice)

    response = client.post(CONNECT_PATH)

    assert response.status_code == 302
    location = response["Location"]
    params = authorize_params(location)
    assert params == {
        "audience": "api.atlassian.com",
        "client_id": "test-client-id",
        "scope": "read:jira-work read:jira-user read:me offline_access",
        "redirect_uri": REDIRECT_URI,
        "state": params["state"],
        "response_type": "code",
        "prompt": "consent",
    }
    # Space-separated scopes travel as %20, never as "+".
    assert "scope=read%3Ajira-work%20read%3Ajira-user%20read%3Ame%20offline_access&" in location
    assert "+" not in location
    assert "no-store" in response["Cache-Control"]


def test_connect_stores_an_unguessable_state_bound_to_user_and_time(alice: User) -> None:
    client = logged_in(alice)
    before = timezone.now().timestamp()

    state = start_flow(client)

    # token_urlsafe(32): 32 random bytes, 43 URL-safe characters.
    assert len(state) == 43
    assert set(state) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    entry = pending_states(client)[state]
    assert entry["user"] == alice.pk
    assert before <= entry["at"] <= timezone.now().timestamp()


def test_each_tab_gets_its_own_state_and_only_the_newest_are_kept(alice: User) -> None:
    client = logged_in(alice)

    states = [start_flow(client) for _ in range(oauth.MAX_PENDING + 2)]

    assert len(set(states)) == len(states)
    assert list(pending_states(client)) == states[-oauth.MAX_PENDING :]


def test_the_newest_state_survives_the_cap_when_the_clock_stands_still(alice: User) -> None:
    # A coarse clock (or a frozen one) issues several states with the same time: the
    # one just sent to Atlassian must never be the one dropped.
    client = logged_in(alice)
    frozen = timezone.now()
    with mock.patch("integrations.clock.now", return_value=frozen):
        states = [start_flow(client) for _ in range(oauth.MAX_PENDING + 1)]

    assert list(pending_states(client)) == states[1:]


def test_a_state_dropped_by_the_cap_is_refused(alice: User) -> None:
    client = logged_in(alice)
    states = [start_flow(client) for _ in range(oauth.MAX_PENDING + 1)]

    response = callback(client, code="whatever", state=states[0])

    assert response.status_code == 400
    assert b"does not belong to a Jira connection started in this browser session" in response.content


@override_settings(ALLOWED_HOSTS=["*"], USE_X_FORWARDED_HOST=True)
def test_redirect_uri_comes_from_settings_not_from_a_spoofed_host(alice: User) -> None:
    client = logged_in(alice)

    response = client.post(CONNECT_PATH, HTTP_HOST="evil.example", HTTP_X_FORWARDED_HOST="attacker.example")

    assert response.status_code == 302
    assert authorize_params(response["Location"])["redirect_uri"] == REDIRECT_URI
    assert "evil.example" not in response["Location"]
    assert "attacker.example" not in response["Location"]


def test_connect_refuses_get(alice: User) -> None:
    client = logged_in(alice)

    response = client.get(CONNECT_PATH)

    assert response.status_code == 405
    assert pending_states(client) == {}


def test_anonymous_connect_goes_to_the_login_page(db: None) -> None:
    client = Client()

    response = client.post(CONNECT_PATH)

    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={CONNECT_PATH}"
    assert pending_states(client) == {}


def test_connect_without_csrf_token_is_refused(alice: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    response = client.post(CONNECT_PATH)

    assert response.status_code == 403
    assert pending_states(client) == {}


@override_settings(ATLASSIAN_CLIENT_ID="")
def test_connect_when_jira_is_not_configured_explains_instead_of_crashing(alice: User) -> None:
    client = logged_in(alice)

    response = client.post(CONNECT_PATH)

    assert response.status_code == 503
    assert b"Jira is not configured on this portal" in response.content
    assert b"Start again" not in response.content
    assert pending_states(client) == {}


@override_settings(ATLASSIAN_CLIENT_ID="")
def test_callback_when_jira_is_not_configured_explains_instead_of_crashing(alice: User) -> None:
    response = callback(logged_in(alice), code="c", state="s")

    assert response.status_code == 503
    assert b"Jira is not configured on this portal" in response.content
