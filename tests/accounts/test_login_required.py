"""Pages for signed-in users send visitors to log in, then back where they were going."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from django.test import Client

from accounts.models import User

PROTECTED = ["/settings/", "/jira/", "/accounts/password_change/"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", PROTECTED)
def test_anonymous_visitor_is_sent_to_login_with_next(client: Client, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 302
    assert response.url == f"/accounts/login/?next={quote(path)}"


@pytest.mark.parametrize("path", PROTECTED)
def test_after_login_the_visitor_lands_on_the_page_they_wanted(client: Client, alice: User, path: str) -> None:
    login_page = client.get(client.get(path).url)
    assert f'name="next" value="{path}"' in login_page.content.decode()

    response = client.post(
        "/accounts/login/", {"username": "alice@example.com", "password": "correct horse battery staple", "next": path}
    )

    assert response.status_code == 302
    assert response.url == path
    assert client.get(path).status_code == 200


def test_settings_page_is_not_cached(client: Client, alice: User) -> None:
    client.force_login(alice)

    response = client.get("/settings/")

    assert response.status_code == 200
    assert "no-store" in response.headers["Cache-Control"]
