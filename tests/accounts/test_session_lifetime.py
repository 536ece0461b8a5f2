"""Signed-in sessions end after 30 minutes without a request, and 12 hours after sign-in
however active (SESSION_IDLE_TIMEOUT, SESSION_COOKIE_AGE)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth import SESSION_KEY
from django.test import Client
from django.utils import timezone

from accounts.models import User


class Clock:
    def __init__(self) -> None:
        self.at = timezone.now()

    def advance(self, **delta: float) -> None:
        self.at += timedelta(**delta)

    def now(self) -> datetime:
        return self.at


@pytest.fixture
def clock() -> Iterator[Clock]:
    fake = Clock()
    with mock.patch("integrations.clock.now", fake.now):
        yield fake


@pytest.fixture
def signed_in(clock: Clock, alice: User) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def is_signed_in(client: Client) -> bool:
    return client.get("/settings/").status_code == 200


def test_a_session_idle_for_31_minutes_is_signed_out_and_told_why(clock: Clock, signed_in: Client) -> None:
    clock.advance(minutes=31)

    response = signed_in.get("/settings/", follow=True)

    assert response.redirect_chain[-1][0].startswith("/accounts/login/")
    assert "You were signed out after 30 minutes without activity." in response.content.decode()
    assert SESSION_KEY not in signed_in.session


def test_activity_keeps_a_session_alive_past_the_idle_timeout(clock: Clock, signed_in: Client) -> None:
    for _ in range(4):
        clock.advance(minutes=29)
        assert is_signed_in(signed_in)


def test_a_session_ends_12_hours_after_sign_in_however_active(clock: Clock, signed_in: Client) -> None:
    for _ in range(35):
        clock.advance(minutes=20)
        assert is_signed_in(signed_in)  # 11 h 40 min
    clock.advance(minutes=21)

    response = signed_in.get("/settings/", follow=True)

    assert response.redirect_chain[-1][0].startswith("/accounts/login/")
    assert "You were signed out 12 hours after signing in." in response.content.decode()


def test_signing_in_again_restarts_both_clocks(clock: Clock, signed_in: Client, alice: User) -> None:
    clock.advance(hours=11, minutes=50)
    signed_in.force_login(alice)

    clock.advance(minutes=20)

    assert is_signed_in(signed_in)


def test_the_lifetimes_are_settings(clock: Clock, signed_in: Client, settings: Any) -> None:
    settings.SESSION_IDLE_TIMEOUT = 5 * 60
    clock.advance(minutes=6)

    assert not is_signed_in(signed_in)


def test_a_login_through_the_form_starts_the_clocks(clock: Clock, alice: User) -> None:
    client = Client()
    client.post("/accounts/login/", {"username": "alice@example.com", "password": "correct horse battery staple"})
    clock.advance(minutes=29)
    assert is_signed_in(client)

    clock.advance(minutes=31)

    assert not is_signed_in(client)
