"""Password reset by email: one link, usable once; no hint whether an address exists."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from django.contrib.auth.tokens import PasswordResetTokenGenerator
from django.core import mail
from django.http import HttpResponse
from django.test import Client

from accounts.models import User

RESET = "/accounts/password_reset/"
RESET_DONE = "/accounts/password_reset/done/"
NEW_PASSWORD = "saffron lighthouse gravel 77"
LINK = re.compile(r"http://testserver(/accounts/reset/[^/\s]+/[^/\s]+/)")


def reset_link(message: mail.EmailMessage) -> str:
    found = LINK.findall(message.body)
    assert len(found) == 1, message.body
    return found[0]


def test_reset_sends_one_email_with_a_link_to_the_user(client: Client, alice: User) -> None:
    response = client.post(RESET, {"email": "alice@example.com"})

    assert response.status_code == 302
    assert response.url == RESET_DONE
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["alice@example.com"]
    assert message.subject == "Reset your jiraconnect password"
    assert reset_link(message).startswith("/accounts/reset/")


def test_reset_for_the_email_in_another_case_goes_to_the_stored_address(client: Client, alice: User) -> None:
    client.post(RESET, {"email": "Alice@EXAMPLE.com"})

    assert [m.to for m in mail.outbox] == [["alice@example.com"]]


def test_following_the_link_sets_a_new_password_that_logs_in(client: Client, alice: User) -> None:
    client.post(RESET, {"email": "alice@example.com"})
    link = reset_link(mail.outbox[0])

    # Django swaps the token in the URL for one kept in the session, then shows the form.
    form_page = client.get(link, follow=True)
    assert form_page.status_code == 200
    assert "Choose a new password" in form_page.content.decode()
    set_password_url = form_page.redirect_chain[-1][0]
    done = client.post(set_password_url, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})

    assert done.status_code == 302
    assert done.url == "/accounts/reset/done/"
    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)
    fresh = Client()
    login = fresh.post("/accounts/login/", {"username": "alice@example.com", "password": NEW_PASSWORD})
    assert login.status_code == 302
    assert fresh.session["_auth_user_id"] == str(alice.pk)
    old = Client().post(
        "/accounts/login/", {"username": "alice@example.com", "password": "correct horse battery staple"}
    )
    assert old.status_code == 200


def test_the_link_works_once(client: Client, alice: User) -> None:
    client.post(RESET, {"email": "alice@example.com"})
    link = reset_link(mail.outbox[0])
    form_page = client.get(link, follow=True)
    client.post(form_page.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})

    second = Client().get(link, follow=True)

    assert second.status_code == 200
    page = second.content.decode()
    assert "This link has expired" in page
    assert 'name="new_password1"' not in page


def test_weak_new_password_is_refused_and_the_link_stays_usable(client: Client, alice: User) -> None:
    client.post(RESET, {"email": "alice@example.com"})
    form_page = client.get(reset_link(mail.outbox[0]), follow=True)

    response = client.post(form_page.redirect_chain[-1][0], {"new_password1": "12345678", "new_password2": "12345678"})

    assert response.status_code == 200
    assert "This password is too common." in response.content.decode()
    alice.refresh_from_db()
    assert alice.check_password("correct horse battery staple")


def test_unknown_email_sends_nothing_but_shows_the_same_page(client: Client, alice: User) -> None:
    known = client.post(RESET, {"email": "alice@example.com"}, follow=True)
    mail.outbox.clear()

    unknown = client.post(RESET, {"email": "nobody@example.com"}, follow=True)

    assert mail.outbox == []
    assert unknown.redirect_chain == known.redirect_chain == [(RESET_DONE, 302)]
    assert unknown.content == known.content
    assert "If an account exists for that address" in unknown.content.decode()


def _link_opened_after(client: Client, monkeypatch: pytest.MonkeyPatch, minutes: int) -> str:
    client.post(RESET, {"email": "alice@example.com"})
    link = reset_link(mail.outbox[0])
    later = datetime.now() + timedelta(minutes=minutes)
    monkeypatch.setattr(PasswordResetTokenGenerator, "_now", lambda self: later)
    return client.get(link, follow=True).content.decode()


def test_a_reset_link_still_works_59_minutes_later(
    client: Client, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = _link_opened_after(client, monkeypatch, minutes=59)

    assert 'name="new_password1"' in page


def test_a_reset_link_has_expired_61_minutes_later(
    client: Client, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = _link_opened_after(client, monkeypatch, minutes=61)

    assert "This link has expired" in page
    assert 'name="new_password1"' not in page


def _pages_of_the_reset_journey(client: Client) -> list[tuple[str, HttpResponse]]:
    seen: list[tuple[str, HttpResponse]] = [(RESET, client.get(RESET))]
    posted = client.post(RESET, {"email": "alice@example.com"})
    seen += [(f"POST {RESET}", posted), (RESET_DONE, client.get(RESET_DONE))]
    link = reset_link(mail.outbox[0])
    to_form = client.get(link)
    seen += [(link, to_form), (to_form.url, client.get(to_form.url))]
    done = client.post(to_form.url, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    seen += [(f"POST {to_form.url}", done), (done.url, client.get(done.url))]
    return seen


def test_every_page_of_the_reset_journey_is_never_stored(client: Client, alice: User) -> None:
    pages = _pages_of_the_reset_journey(client)

    assert [url for url, response in pages if "no-store" not in response.get("Cache-Control", "")] == []
    assert [response.status_code for _, response in pages] == [200, 302, 200, 302, 200, 302, 200]
