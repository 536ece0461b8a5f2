"""Users as the tests sign them in."""

from __future__ import annotations

from django.test import Client

from accounts.models import User

ALICE_PASSWORD = "correct horse battery staple"  # the passwords of the conftest users
BOB_PASSWORD = "another horse battery staple"
STAFF_PASSWORD = "staff horse battery staple"


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def signed_in_user_id(client: Client) -> str | None:
    """The user id the client's session is signed in as, if any."""
    user_id: str | None = client.session.get("_auth_user_id")
    return user_id
