"""Small helpers shared by the account tests."""

from __future__ import annotations

from django.test import Client

ALICE_PASSWORD = "correct horse battery staple"  # the conftest `alice` fixture's password


def signed_in_user_id(client: Client) -> str | None:
    """The user id the client's session is signed in as, if any."""
    user_id: str | None = client.session.get("_auth_user_id")
    return user_id
