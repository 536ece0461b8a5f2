"""Guessing passwords: ten wrong ones per account and address, then a pause (django-axes)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from axes.models import AccessAttempt
from django.conf import settings
from django.test import Client
from django.utils import timezone

from accounts.models import User
from tests.support.accounts import ALICE_PASSWORD, signed_in_user_id

LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"
WRONG = "wrong horse battery staple"


@pytest.fixture(autouse=True)
def _only_the_lockout(settings: object) -> None:
    """The coarse abuse limits (jiraconnect/ratelimits.py, tested on their own) would answer
    429 first: switched off here, so what these tests see is django-axes alone."""
    settings.RATE_LIMIT_LOGIN_PER_IP = None  # type: ignore[attr-defined]
    settings.RATE_LIMIT_LOGIN_PER_ADDRESS = None  # type: ignore[attr-defined]


def attempt(
    client: Client, password: str, *, url: str = LOGIN, email: str = "alice@example.com", ip: str = "203.0.113.7"
) -> object:
    return client.post(url, {"username": email, "password": password}, REMOTE_ADDR=ip)


def test_forty_wrong_passwords_lock_the_account_from_that_address_until_the_cool_off_ends(
    client: Client, alice: User
) -> None:
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        answers = [attempt(client, WRONG).status_code for _ in range(40)]
        # The first tries get the login form again; the rest the lockout page.
        assert answers[: settings.AXES_FAILURE_LIMIT - 1] == [200] * (settings.AXES_FAILURE_LIMIT - 1)
        assert set(answers[settings.AXES_FAILURE_LIMIT :]) == {429}

        clock.shift(timedelta(minutes=1))
        locked = attempt(client, ALICE_PASSWORD)
        assert locked.status_code == 429
        page = locked.content.decode()
        assert "Too many attempts" in page
        retry_at = timezone.now() + settings.AXES_COOLOFF_TIME
        assert f'Try again after <strong id="retry-at">{retry_at:%H:%M} UTC</strong>' in page
        assert ALICE_PASSWORD not in page
        assert signed_in_user_id(client) is None

        # The right password after the cool-off (counted from the last try) signs in.
        clock.shift(settings.AXES_COOLOFF_TIME - timedelta(seconds=1))
        assert attempt(client, ALICE_PASSWORD).status_code == 429
        assert signed_in_user_id(client) is None
        clock.shift(settings.AXES_COOLOFF_TIME + timedelta(seconds=1))
        admitted = attempt(client, ALICE_PASSWORD)

    assert admitted.status_code == 302
    assert signed_in_user_id(client) == str(alice.pk)
    # Success clears the count: the next typo is one of ten again.
    assert not AccessAttempt.objects.filter(failures_since_start__gt=0).exists()


def test_the_lock_is_per_account_and_address_so_the_real_user_elsewhere_still_signs_in(
    client: Client, alice: User, bob: User
) -> None:
    for _ in range(settings.AXES_FAILURE_LIMIT):
        attempt(client, WRONG, ip="198.51.100.66")

    assert attempt(client, ALICE_PASSWORD, ip="198.51.100.66").status_code == 429
    # Another account from the attacker's address, and Alice from her own, are unaffected.
    assert (
        attempt(Client(), "another horse battery staple", email="bob@example.com", ip="198.51.100.66").status_code
        == 302
    )
    elsewhere = Client()
    assert attempt(elsewhere, ALICE_PASSWORD, ip="192.0.2.10").status_code == 302
    assert signed_in_user_id(elsewhere) == str(alice.pk)


def test_the_address_counts_in_any_case(client: Client, alice: User) -> None:
    for n in range(settings.AXES_FAILURE_LIMIT):
        attempt(client, WRONG, email="ALICE@example.com" if n % 2 else " alice@EXAMPLE.com")

    assert attempt(client, ALICE_PASSWORD).status_code == 429
    assert list(AccessAttempt.objects.values_list("username", flat=True)) == ["alice@example.com"]


def test_the_admin_login_locks_out_too(client: Client, staff: User) -> None:
    for _ in range(settings.AXES_FAILURE_LIMIT):
        attempt(client, WRONG, url=ADMIN_LOGIN, email=staff.email)

    locked = attempt(client, "staff horse battery staple", url=ADMIN_LOGIN, email=staff.email)

    assert locked.status_code == 429
    assert "Too many attempts" in locked.content.decode()
    assert signed_in_user_id(client) is None


def test_stored_attempts_and_logs_hold_no_password(
    client: Client, alice: User, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    for _ in range(settings.AXES_FAILURE_LIMIT + 1):
        attempt(client, WRONG)

    stored = " ".join(str(row) for row in AccessAttempt.objects.values())
    assert "203.0.113.7" in stored
    assert WRONG not in stored
    assert WRONG not in caplog.text
    # Axes' log lines leave out the address and the IP (personal data).
    assert "alice@example.com" not in caplog.text
    assert "203.0.113.7" not in caplog.text
