"""Log in with the email address (any case), log out by POST only."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client

from accounts.models import User
from tests.support.accounts import ALICE_PASSWORD, signed_in_user_id
from tests.support.secrets import assert_no_secrets

LOGIN = "/accounts/login/"
LOGOUT = "/accounts/logout/"
INVALID_LOGIN = "Please enter a correct email address and password."


@pytest.mark.django_db
def test_login_page_renders_the_form(client: Client) -> None:
    response = client.get(LOGIN)

    assert response.status_code == 200
    page = response.content.decode()
    assert "<h1>Log in</h1>" in page
    assert 'name="username"' in page
    assert 'type="email"' in page
    assert 'name="password"' in page
    assert 'href="/accounts/password_reset/"' in page
    assert 'href="/accounts/signup/"' in page


def test_login_with_the_email_in_another_case_signs_in(client: Client, alice: User) -> None:
    response = client.post(LOGIN, {"username": "  ALICE@Example.Com", "password": ALICE_PASSWORD})

    assert response.status_code == 302
    assert response.url == "/settings/"
    assert signed_in_user_id(client) == str(alice.pk)


def test_wrong_password_shows_an_error_and_does_not_sign_in(client: Client, alice: User) -> None:
    response = client.post(LOGIN, {"username": "alice@example.com", "password": "wrong horse battery staple"})

    assert response.status_code == 200
    page = response.content.decode()
    assert INVALID_LOGIN in page
    # The address is matched in any case, so Django's "may be case-sensitive" would mislead.
    assert "case-sensitive" not in page
    assert_no_secrets(page, "wrong horse battery staple")
    assert signed_in_user_id(client) is None


def test_unknown_email_gets_the_same_error_as_a_wrong_password(client: Client, alice: User) -> None:
    response = client.post(LOGIN, {"username": "nobody@example.com", "password": ALICE_PASSWORD})

    assert response.status_code == 200
    assert INVALID_LOGIN in response.content.decode()
    assert signed_in_user_id(client) is None


def test_inactive_user_cannot_log_in(client: Client, alice: User) -> None:
    alice.is_active = False
    alice.save()

    response = client.post(LOGIN, {"username": "alice@example.com", "password": ALICE_PASSWORD})

    assert response.status_code == 200
    assert INVALID_LOGIN in response.content.decode()
    assert signed_in_user_id(client) is None


def test_login_rotates_the_session_key(client: Client, alice: User) -> None:
    # A session that exists before login, as an attacker could have planted (fixation).
    session = client.session
    session["planted"] = "before-login"
    session.save()
    key_before = client.cookies[settings.SESSION_COOKIE_NAME].value

    response = client.post(LOGIN, {"username": "alice@example.com", "password": ALICE_PASSWORD})

    assert response.status_code == 302
    key_after = client.cookies[settings.SESSION_COOKIE_NAME].value
    assert key_after != key_before
    assert not SessionStore().exists(key_before)
    assert signed_in_user_id(client) == str(alice.pk)


def test_logout_by_get_is_refused_and_keeps_the_user_signed_in(client: Client, alice: User) -> None:
    client.force_login(alice)

    response = client.get(LOGOUT)

    assert response.status_code == 405
    assert signed_in_user_id(client) == str(alice.pk)
    assert client.get("/settings/").status_code == 200


def test_logout_by_post_signs_out_and_lands_on_login(client: Client, alice: User) -> None:
    client.force_login(alice)
    key_before = client.cookies[settings.SESSION_COOKIE_NAME].value

    response = client.post(LOGOUT)

    assert response.status_code == 302
    assert response.url == LOGIN
    assert signed_in_user_id(client) is None
    assert not SessionStore().exists(key_before)
    assert client.get("/settings/").status_code == 302


def test_logout_without_csrf_token_is_refused(alice: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    response = client.post(LOGOUT)

    assert response.status_code == 403
    assert signed_in_user_id(client) == str(alice.pk)


def test_the_nav_offers_logout_as_a_post_form(client: Client, alice: User) -> None:
    client.force_login(alice)

    page = client.get("/settings/").content.decode()

    assert f'<form method="post" action="{LOGOUT}"' in page
    assert f'href="{LOGOUT}"' not in page
