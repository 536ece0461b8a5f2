"""The callback's state check: every bad state is refused before any token call."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from unittest import mock

import pytest
import responses
from django.http import HttpResponse
from django.test import Client
from django.utils import timezone

from accounts.models import User
from tests.support.accounts import logged_in
from tests.support.atlassian import token_calls
from tests.support.oauth import (
    CODE,
    another_browser,
    callback,
    hand_session_to,
    pending_states,
    register_success,
    row_counts,
    start_flow,
)


def _assert_refused(response: HttpResponse, *, says: bytes) -> None:
    assert response.status_code == 400
    assert b"This Jira connection attempt is not valid" in response.content
    assert says in response.content
    # The way out: a POST form back to connect.
    assert b'action="/integrations/jira/connect/"' in response.content
    assert b"Start again" in response.content


# Each case: (what the callback gets, given the state alice's flow was issued) and
# the sentence the page must show.
BadState = Callable[[str], dict[str, str]]
BAD_STATES: list[tuple[str, BadState, bytes]] = [
    ("missing", lambda state: {"code": CODE}, b"carried no state"),
    ("empty", lambda state: {"code": CODE, "state": ""}, b"carried no state"),
    ("wrong", lambda state: {"code": CODE, "state": state[:-4] + "AAAA"}, b"does not belong"),
    ("oversized", lambda state: {"code": CODE, "state": state + "x" * 5000}, b"does not belong"),
]


@pytest.mark.parametrize(("case", "params", "says"), BAD_STATES, ids=[case[0] for case in BAD_STATES])
def test_bad_state_is_refused_without_token_call(
    alice: User, mocked: responses.RequestsMock, case: str, params: BadState, says: bytes
) -> None:
    register_success(mocked)
    client = logged_in(alice)
    state = start_flow(client)

    response = callback(client, **params(state))

    _assert_refused(response, says=says)
    assert len(mocked.calls) == 0
    assert row_counts() == (0, 0, 0)


def test_expired_state_is_refused_without_token_call(alice: User, mocked: responses.RequestsMock) -> None:
    register_success(mocked)
    client = logged_in(alice)
    state = start_flow(client)

    with mock.patch("integrations.clock.now", return_value=timezone.now() + timedelta(minutes=11)):
        response = callback(client, code=CODE, state=state)

    _assert_refused(response, says=b"took too long and expired")
    assert len(mocked.calls) == 0
    assert row_counts() == (0, 0, 0)
    assert state not in pending_states(client)


def test_state_is_still_good_just_inside_its_ten_minutes(alice: User, mocked: responses.RequestsMock) -> None:
    register_success(mocked)
    client = logged_in(alice)
    state = start_flow(client)

    with mock.patch("integrations.clock.now", return_value=timezone.now() + timedelta(minutes=9)):
        response = callback(client, code=CODE, state=state)

    assert response.status_code == 302
    assert len(token_calls(mocked)) == 1


def test_replayed_state_is_refused_without_token_call(alice: User, mocked: responses.RequestsMock) -> None:
    register_success(mocked)
    client = logged_in(alice)
    state = start_flow(client)
    first = callback(client, code=CODE, state=state)
    assert first.status_code == 302
    assert first["Location"] == "/settings/"
    calls_after_first, rows_after_first = len(mocked.calls), row_counts()
    assert rows_after_first[0] == 1

    replay = callback(client, code=CODE, state=state)

    _assert_refused(replay, says=b"does not belong")
    assert len(mocked.calls) == calls_after_first
    assert row_counts() == rows_after_first
    assert state not in pending_states(client)


def _bob_takes_over_the_session(client: Client, alice: User, bob: User) -> Client:
    # Same browser session, but by the time the reply arrives it is bob's: user binding.
    return hand_session_to(client, bob)


def _bob_logs_in(client: Client, alice: User, bob: User) -> Client:
    # Logging in as someone else flushes the session: alice's pending states go with it.
    client.force_login(bob)
    return client


def _another_browser(client: Client, alice: User, bob: User) -> Client:
    return another_browser(client)


Switch = Callable[[Client, User, User], Client]
SWITCHES: list[tuple[str, Switch, bytes]] = [
    ("issued-to-another-user", _bob_takes_over_the_session, b"started by a different portal user"),
    ("after-login-as-another-user", _bob_logs_in, b"does not belong"),
    ("issued-in-another-session", _another_browser, b"does not belong"),
]


@pytest.mark.parametrize(("case", "switch", "says"), SWITCHES, ids=[case[0] for case in SWITCHES])
def test_state_finished_by_another_user_or_session_is_refused(
    alice: User, bob: User, mocked: responses.RequestsMock, case: str, switch: Switch, says: bytes
) -> None:
    register_success(mocked)
    client = logged_in(alice)
    state = start_flow(client)
    finisher = switch(client, alice, bob)

    response = callback(finisher, code=CODE, state=state)

    _assert_refused(response, says=says)
    assert len(mocked.calls) == 0
    assert row_counts() == (0, 0, 0)
    assert state not in pending_states(finisher)


def test_logged_out_browser_is_refused_without_token_call(alice: User, mocked: responses.RequestsMock) -> None:
    register_success(mocked)
    client = logged_in(alice)
    state = start_flow(client)
    client.logout()

    response = callback(client, code=CODE, state=state)

    assert response.status_code == 403
    assert b"You are not signed in" in response.content
    assert b"Start again" not in response.content
    # Never a login redirect: its ?next= would carry the code along.
    assert not response.has_header("Location")
    assert len(mocked.calls) == 0
    assert row_counts() == (0, 0, 0)


def test_anonymous_callback_is_refused(db: None, mocked: responses.RequestsMock) -> None:
    register_success(mocked)

    response = callback(Client(), code=CODE, state="anything")

    assert response.status_code == 403
    assert len(mocked.calls) == 0


def test_good_state_without_code_is_refused_and_spent(alice: User, mocked: responses.RequestsMock) -> None:
    register_success(mocked)
    client = logged_in(alice)
    state = start_flow(client)

    response = callback(client, state=state)

    assert response.status_code == 400
    assert b"Atlassian sent no authorization code" in response.content
    assert b"Start again" in response.content
    assert len(mocked.calls) == 0
    assert row_counts() == (0, 0, 0)
    assert state not in pending_states(client)


def test_other_pending_states_stay_usable_after_a_refusal(alice: User, mocked: responses.RequestsMock) -> None:
    # Two tabs: a forged reply in one does not spoil the flow in the other.
    client = logged_in(alice)
    good = start_flow(client)
    assert callback(client, code=CODE, state="forged").status_code == 400

    register_success(mocked)
    response = callback(client, code=CODE, state=good)

    assert response.status_code == 302
    assert row_counts()[0] == 1


def test_callback_refuses_post(alice: User, mocked: responses.RequestsMock) -> None:
    client = logged_in(alice)
    state = start_flow(client)

    response = client.post("/integrations/jira/callback/", {"code": CODE, "state": state})

    assert response.status_code == 405
    assert len(mocked.calls) == 0
    assert state in pending_states(client)
