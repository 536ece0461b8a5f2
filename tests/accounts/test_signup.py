"""Sign-up at /accounts/signup/: email is the login, Django's password validators apply."""

from __future__ import annotations

from typing import Any
from unittest.mock import patch

import pytest
from django.test import Client

from accounts.forms import SignUpForm
from accounts.models import User
from tests.support.accounts import signed_in_user_id
from tests.support.secrets import assert_no_secrets

SIGNUP = "/accounts/signup/"
GOOD_PASSWORD = "violet tangerine moonwalk 42"


def signup(client: Client, email: str, password1: str = GOOD_PASSWORD, password2: str | None = None) -> Any:
    return client.post(
        SIGNUP, {"email": email, "password1": password1, "password2": password1 if password2 is None else password2}
    )


@pytest.mark.django_db
def test_signup_page_renders_the_form(client: Client) -> None:
    response = client.get(SIGNUP)

    assert response.status_code == 200
    page = response.content.decode()
    assert "Create your account" in page
    assert 'name="email"' in page
    assert 'name="password1"' in page
    assert 'name="password2"' in page


def test_duplicate_email_in_another_case_is_refused_with_visible_error(client: Client, alice: User) -> None:
    response = signup(client, "ALICE@Example.COM")

    assert response.status_code == 200
    assert "An account with this email address already exists." in response.content.decode()
    assert User.objects.count() == 1
    assert signed_in_user_id(client) is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("email", "password", "message"),
    [
        ("carol@example.com", "Xk3#q7", "This password is too short. It must contain at least 8 characters."),
        ("carol@example.com", "password123", "This password is too common."),
        ("carol@example.com", "40298371655", "This password is entirely numeric."),
        (
            "jonathan.pemberton@example.com",
            "jonathanpemberton",
            "The password is too similar to the email address.",
        ),
    ],
    ids=["too-short", "common", "numeric", "similar-to-email"],
)
def test_weak_password_is_refused_with_the_validator_message(
    client: Client, email: str, password: str, message: str
) -> None:
    response = signup(client, email, password)

    assert response.status_code == 200
    page = response.content.decode()
    assert message in page
    # The page is re-rendered without echoing the password back.
    assert_no_secrets(page, password)
    assert not User.objects.exists()
    assert signed_in_user_id(client) is None


@pytest.mark.django_db
def test_mismatched_passwords_are_refused(client: Client) -> None:
    response = signup(client, "carol@example.com", GOOD_PASSWORD, GOOD_PASSWORD + "!")

    assert response.status_code == 200
    assert "The two password fields didn\u2019t match." in response.content.decode()
    assert not User.objects.exists()
    assert signed_in_user_id(client) is None


@pytest.mark.django_db
def test_signup_creates_lower_cased_user_signs_in_and_lands_on_settings(client: Client) -> None:
    response = signup(client, "  Carol.Jones@Example.COM ")

    assert response.status_code == 302
    assert response.url == "/settings/"
    user = User.objects.get()
    assert user.email == "carol.jones@example.com"
    assert user.check_password(GOOD_PASSWORD)
    assert not user.is_staff
    assert not user.is_superuser
    assert signed_in_user_id(client) == str(user.pk)

    settings_page = client.get(response.url)
    assert settings_page.status_code == 200
    assert "carol.jones@example.com" in settings_page.content.decode()
    assert "Welcome! Your account is ready." in settings_page.content.decode()


def test_signed_in_user_visiting_signup_is_redirected(client: Client, alice: User) -> None:
    client.force_login(alice)

    response = client.get(SIGNUP)

    assert response.status_code == 302
    assert response.url == "/settings/"


def test_signed_in_user_posting_signup_creates_no_account(client: Client, alice: User) -> None:
    client.force_login(alice)

    response = signup(client, "carol@example.com")

    assert response.status_code == 302
    assert response.url == "/settings/"
    assert list(User.objects.values_list("email", flat=True)) == ["alice@example.com"]
    assert signed_in_user_id(client) == str(alice.pk)


@pytest.mark.django_db
def test_same_email_registered_between_validation_and_save_shows_the_error_not_a_500(client: Client) -> None:
    original_post_clean = SignUpForm._post_clean

    def racing_post_clean(form: SignUpForm) -> None:
        original_post_clean(form)
        # Another request wins the race after this form validated the address.
        User.objects.create_user("Carol@Example.com", "another horse battery staple")

    with patch.object(SignUpForm, "_post_clean", racing_post_clean):
        response = signup(client, "carol@example.com")

    assert response.status_code == 200
    assert "An account with this email address already exists." in response.content.decode()
    assert User.objects.count() == 1
    assert signed_in_user_id(client) is None
