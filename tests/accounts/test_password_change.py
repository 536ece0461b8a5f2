"""Password change at /accounts/password_change/: keeps this session, ends the others."""

from __future__ import annotations

from django.test import Client

from accounts.models import User

CHANGE = "/accounts/password_change/"
OLD_PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "saffron lighthouse gravel 77"


def test_password_change_sets_the_new_password_and_keeps_the_user_signed_in(client: Client, alice: User) -> None:
    client.force_login(alice)

    response = client.post(
        CHANGE, {"old_password": OLD_PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )

    assert response.status_code == 302
    assert response.url == "/accounts/password_change/done/"
    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)
    assert client.session["_auth_user_id"] == str(alice.pk)
    assert client.get("/settings/").status_code == 200
    assert "Password changed" in client.get(response.url).content.decode()


def test_password_change_signs_out_the_users_other_sessions(client: Client, alice: User) -> None:
    elsewhere = Client()
    elsewhere.force_login(alice)
    client.force_login(alice)

    client.post(CHANGE, {"old_password": OLD_PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})

    other = elsewhere.get("/settings/")
    assert other.status_code == 302
    assert other.url.startswith("/accounts/login/")


def test_wrong_old_password_is_refused(client: Client, alice: User) -> None:
    client.force_login(alice)

    response = client.post(
        CHANGE, {"old_password": "wrong horse", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )

    assert response.status_code == 200
    assert "Your old password was entered incorrectly." in response.content.decode()
    alice.refresh_from_db()
    assert alice.check_password(OLD_PASSWORD)


def test_weak_new_password_is_refused(client: Client, alice: User) -> None:
    client.force_login(alice)

    response = client.post(CHANGE, {"old_password": OLD_PASSWORD, "new_password1": "alice", "new_password2": "alice"})

    assert response.status_code == 200
    page = response.content.decode()
    assert "This password is too short." in page
    assert "The password is too similar to the email address." in page
    alice.refresh_from_db()
    assert alice.check_password(OLD_PASSWORD)


def test_the_password_change_pages_are_never_stored(client: Client, alice: User) -> None:
    client.force_login(alice)

    form = client.get(CHANGE)
    changed = client.post(
        CHANGE, {"old_password": OLD_PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )
    done = client.get(changed.url)

    assert [form.status_code, changed.status_code, done.status_code] == [200, 302, 200]
    for response in (form, changed, done):
        assert "no-store" in response["Cache-Control"]
