"""`next` after login and sign-up: only places on this site, else the settings page.

UNSAFE is Django's own list of unsafe redirect targets (tests/utils_tests/test_http.py,
URLHasAllowedHostAndSchemeTests.test_bad_urls, with example.com as the attacker and
testserver as us), plus a few of the classic open-redirect spellings.
"""

from __future__ import annotations

from itertools import count
from urllib.parse import urlencode

import pytest
from django.test import Client

from accounts.models import User

DEFAULT = "/settings/"
ALICE_PASSWORD = "correct horse battery staple"
SIGNUP_PASSWORD = "violet tangerine moonwalk 42"

UNSAFE = [
    # Django's list.
    "http://example.com",
    "http:///example.com",
    "https://example.com",
    "ftp://example.com",
    r"\\example.com",
    r"\\\example.com",
    r"/\\/example.com",
    r"\\//example.com",
    r"/\/example.com",
    r"\/example.com",
    r"/\example.com",
    r"http:/\//example.com",
    r"http:\/example.com",
    r"http:/\example.com",
    'javascript:alert("XSS")',
    "\njavascript:alert(x)",
    "java\nscript:alert(x)",
    "\x08//example.com",
    r"http://otherserver\@example.com",
    r"http:\\testserver\@example.com",
    r"http://testserver\me:pass@example.com",
    r"http://testserver\@example.com",
    r"http:\\testserver\confirm\me@example.com",
    "http:999999999",
    "ftp:9999999999",
    "\n",
    "http://[2001:cdba:0000:0000:0000:0000:3257:9652/",
    "http://2001:cdba:0000:0000:0000:0000:3257:9652]/",
    # The usual suspects.
    "//evil.com",
    "///evil.com",
    "https:///evil.com",
    "https://evil.com@testserver",
    "//testserver@evil.com",
    "https://testserver.evil.com/",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "/\t/evil.com",
    " //evil.com",
]

_emails = count()


def login(client: Client, next_url: str, *, secure: bool = False) -> str:
    response = client.post(
        "/accounts/login/",
        {"username": "alice@example.com", "password": ALICE_PASSWORD, "next": next_url},
        secure=secure,
    )
    assert response.status_code == 302
    assert client.session["_auth_user_id"]
    return str(response.url)


def signup(client: Client, next_url: str, *, secure: bool = False) -> str:
    email = f"user{next(_emails)}@example.com"
    response = client.post(
        "/accounts/signup/",
        {"email": email, "password1": SIGNUP_PASSWORD, "password2": SIGNUP_PASSWORD, "next": next_url},
        secure=secure,
    )
    assert response.status_code == 302
    assert User.objects.filter(email=email).exists()
    return str(response.url)


@pytest.mark.parametrize("next_url", UNSAFE)
def test_unsafe_next_after_login_lands_on_settings(client: Client, alice: User, next_url: str) -> None:
    assert login(client, next_url) == DEFAULT


@pytest.mark.django_db
@pytest.mark.parametrize("next_url", UNSAFE)
def test_unsafe_next_after_signup_lands_on_settings(client: Client, next_url: str) -> None:
    assert signup(client, next_url) == DEFAULT


@pytest.mark.parametrize("next_url", UNSAFE)
def test_signed_in_visit_to_signup_with_unsafe_next_lands_on_settings(
    client: Client, alice: User, next_url: str
) -> None:
    client.force_login(alice)

    response = client.get("/accounts/signup/", {"next": next_url})

    assert response.status_code == 302
    assert response.url == DEFAULT


@pytest.mark.django_db
@pytest.mark.parametrize("page", ["/accounts/login/", "/accounts/signup/"])
def test_unsafe_next_is_not_carried_into_the_form(client: Client, page: str) -> None:
    response = client.get(page, {"next": "//evil.com"})

    assert response.status_code == 200
    assert "evil.com" not in response.content.decode()


@pytest.mark.parametrize("next_url", ["/jira/", "/jira/?site=1", "http://testserver/jira/"])
def test_safe_next_after_login_is_honoured(client: Client, alice: User, next_url: str) -> None:
    assert login(client, next_url) == next_url


@pytest.mark.django_db
@pytest.mark.parametrize("next_url", ["/jira/", "/jira/?site=1", "http://testserver/jira/"])
def test_safe_next_after_signup_is_honoured(client: Client, next_url: str) -> None:
    assert signup(client, next_url) == next_url


def test_signed_in_visit_to_signup_honours_a_safe_next(client: Client, alice: User) -> None:
    client.force_login(alice)

    response = client.get("/accounts/signup/", {"next": "/jira/"})

    assert response.status_code == 302
    assert response.url == "/jira/"


@pytest.mark.django_db
def test_signup_page_carries_a_safe_next_into_the_form(client: Client) -> None:
    page = client.get("/accounts/signup/", {"next": "/jira/"}).content.decode()

    assert 'name="next" value="/jira/"' in page


def test_http_next_is_refused_on_an_https_login(client: Client, alice: User) -> None:
    # Over https, a same-host http:// target would downgrade the connection.
    assert login(client, "http://testserver/jira/", secure=True) == DEFAULT


@pytest.mark.django_db
def test_http_next_is_refused_on_an_https_signup(client: Client) -> None:
    assert signup(client, "http://testserver/jira/", secure=True) == DEFAULT


def logout(client: Client, next_url: str, *, via: str) -> str:
    """Log out (POST) with `next` in the form or in the query string; where it went."""
    if via == "form":
        response = client.post("/accounts/logout/", {"next": next_url})
    else:
        response = client.post(f"/accounts/logout/?{urlencode({'next': next_url})}")
    assert response.status_code == 302
    assert "_auth_user_id" not in client.session
    return str(response.url)


@pytest.mark.parametrize("via", ["form", "query"])
@pytest.mark.parametrize("next_url", UNSAFE)
def test_unsafe_next_on_logout_lands_on_login(client: Client, alice: User, next_url: str, via: str) -> None:
    client.force_login(alice)

    assert logout(client, next_url, via=via) == "/accounts/login/"


@pytest.mark.parametrize("via", ["form", "query"])
def test_safe_next_on_logout_is_honoured(client: Client, alice: User, via: str) -> None:
    client.force_login(alice)

    assert logout(client, "/jira/?site=1", via=via) == "/jira/?site=1"
