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


def login_verified(client: Client, user: User) -> Client:
    """Sign `user` in with a password AND a second factor, as the admin requires of staff:
    a confirmed TOTP device, recorded on the session as django_otp.login would."""
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    client.force_login(user)
    device = TOTPDevice.objects.filter(user=user, confirmed=True).first() or TOTPDevice.objects.create(
        user=user, name="test app", confirmed=True
    )
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return client
