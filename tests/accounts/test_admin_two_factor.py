"""Staff reach the admin only with a second factor: a TOTP app, or a recovery code once."""

from __future__ import annotations

import re
from base64 import b32encode
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.test import Client
from django.utils import timezone
from django_otp.oath import totp
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from tests.support.accounts import login_verified
from tests.support.processes import improperly_configured, manage, production_env, settings_seen

ADMIN = "/admin/"
ADMIN_LOGIN = "/admin/login/"
VERIFY = "/admin/otp/"
ENROLL = "/admin/otp/enroll/"
CONNECTIONS = "/admin/integrations/jiraconnection/"
STAFF_PASSWORD = "staff horse battery staple"


def code_for(device: TOTPDevice, *, offset: int = 0) -> str:
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits, drift=offset):06d}"


def enrolled(user: User) -> TOTPDevice:
    return TOTPDevice.objects.create(user=user, name="phone", confirmed=True)


def password_login(client: Client, user: User, password: str = STAFF_PASSWORD) -> Any:
    return client.post(ADMIN_LOGIN, {"username": user.email, "password": password, "next": CONNECTIONS}, follow=True)


def test_staff_signed_in_with_a_password_only_cannot_reach_admin_pages(client: Client, staff: User) -> None:
    enrolled(staff)
    client.force_login(staff)

    for url in (ADMIN, CONNECTIONS, "/admin/accounts/user/", f"/admin/accounts/user/{staff.pk}/change/"):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(f"{ADMIN_LOGIN}?next=")
    # The login page sends a signed-in staff member on to the second step.
    step = client.get(f"{ADMIN_LOGIN}?next={CONNECTIONS}")
    assert step.status_code == 302
    assert step["Location"] == f"{VERIFY}?next=%2Fadmin%2Fintegrations%2Fjiraconnection%2F"


def test_password_login_leads_to_the_code_page_and_a_right_code_admits(client: Client, staff: User) -> None:
    device = enrolled(staff)

    landed = password_login(client, staff)

    assert landed.redirect_chain[-1][0].startswith(VERIFY)
    assert "Enter the 6-digit code" in landed.content.decode()
    assert client.get(CONNECTIONS).status_code == 302

    admitted = client.post(f"{VERIFY}?next={CONNECTIONS}", {"code": code_for(device), "next": CONNECTIONS})
    assert admitted.status_code == 302
    assert admitted["Location"] == CONNECTIONS
    assert client.get(CONNECTIONS).status_code == 200


def test_a_wrong_code_is_refused_and_repeated_guesses_are_slowed(client: Client, staff: User) -> None:
    device = enrolled(staff)
    password_login(client, staff)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        wrong = f"{(int(code_for(device)) + 1) % 1_000_000:06d}"
        refused = client.post(VERIFY, {"code": wrong})
        assert refused.status_code == 200
        assert "That code is not right" in refused.content.decode()
        assert client.get(CONNECTIONS).status_code == 302

        # django-otp now waits before it checks again: even the right code waits.
        throttled = client.post(VERIFY, {"code": code_for(device)})
        assert "Too many wrong codes" in throttled.content.decode()
        assert client.get(CONNECTIONS).status_code == 302

        clock.shift(timedelta(seconds=30))
        assert client.post(VERIFY, {"code": code_for(device)}).status_code == 302
    assert client.get(CONNECTIONS).status_code == 200


def test_verifying_gives_the_session_a_new_key(client: Client, staff: User) -> None:
    device = enrolled(staff)
    password_login(client, staff)
    before = client.session.session_key

    client.post(VERIFY, {"code": code_for(device)})

    assert client.session.session_key != before


def test_enrollment_shows_a_qr_code_and_confirms_the_app_with_its_first_code(client: Client, staff: User) -> None:
    landed = password_login(client, staff)
    assert landed.redirect_chain[-1][0].startswith(ENROLL)
    page = landed.content.decode()
    device = TOTPDevice.objects.get(user=staff)
    assert not device.confirmed
    secret = b32encode(device.bin_key).decode()
    assert '<div class="otp-qr" id="otp-qr"><svg' in page
    assert secret in page
    # A reload keeps the same pending secret, so a code already scanned still works.
    assert secret in client.get(ENROLL).content.decode()
    assert TOTPDevice.objects.filter(user=staff).count() == 1

    with time_machine.travel(timezone.now(), tick=False) as clock:
        wrong = client.post(ENROLL, {"code": "000000" if code_for(device) != "000000" else "111111"})
        assert "That code is not right" in wrong.content.decode()
        assert not TOTPDevice.objects.get(pk=device.pk).confirmed
        assert client.get(CONNECTIONS).status_code == 302

        clock.shift(timedelta(seconds=30))
        confirmed = client.post(ENROLL, {"code": code_for(device), "next": CONNECTIONS})
    assert confirmed.status_code == 200
    codes = re.findall(r"<li><code>([a-z2-7]{8})</code></li>", confirmed.content.decode())
    assert len(codes) == 10
    assert sorted(codes) == sorted(StaticToken.objects.filter(device__user=staff).values_list("token", flat=True))
    assert TOTPDevice.objects.get(pk=device.pk).confirmed
    assert client.get(CONNECTIONS).status_code == 200
    assert confirmed["Cache-Control"].startswith("max-age=0")


def test_an_enrolled_staff_member_cannot_enroll_another_app_with_the_password_alone(
    client: Client, staff: User
) -> None:
    enrolled(staff)
    password_login(client, staff)

    response = client.get(ENROLL)
    client.post(ENROLL, {"code": "123456"})

    assert response.status_code == 302
    assert response["Location"].startswith(VERIFY)
    assert TOTPDevice.objects.filter(user=staff).count() == 1


def test_a_recovery_code_admits_once(staff: User) -> None:
    enrolled(staff)
    first = Client()
    password_login(first, staff)
    # Recovery codes as enrollment makes them.
    recovery = StaticDevice.objects.create(user=staff, name="Recovery codes", confirmed=True)
    recovery.token_set.create(token="abcd2345")
    recovery.token_set.create(token="wxyz6789")

    assert first.post(VERIFY, {"code": " ABCD 2345 "}).status_code == 302
    assert first.get(CONNECTIONS).status_code == 200

    second = Client()
    password_login(second, staff)
    reused = second.post(VERIFY, {"code": "abcd2345"})
    assert "That code is not right" in reused.content.decode()
    assert second.get(CONNECTIONS).status_code == 302
    assert list(recovery.token_set.values_list("token", flat=True)) == ["wxyz6789"]


def test_non_staff_and_anonymous_get_the_admin_login_from_the_code_pages(client: Client, alice: User) -> None:
    for url in (VERIFY, ENROLL):
        assert client.get(url)["Location"] == ADMIN_LOGIN
    client.force_login(alice)
    for url in (VERIFY, ENROLL):
        assert client.get(url)["Location"] == ADMIN_LOGIN
    assert not TOTPDevice.objects.exists()


def test_the_otp_secret_and_recovery_codes_never_reach_the_logs_or_the_device_admin(
    client: Client, staff: User, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    password_login(client, staff)
    device = TOTPDevice.objects.get(user=staff)
    confirmed = client.post(ENROLL, {"code": code_for(device)})
    codes = re.findall(r"<li><code>([a-z2-7]{8})</code></li>", confirmed.content.decode())
    assert codes
    client.post(VERIFY, {"code": codes[0]})

    secrets = [device.key, b32encode(device.bin_key).decode(), *codes]
    pages = [
        client.get(url).content.decode()
        for url in (
            "/admin/otp_totp/totpdevice/",
            f"/admin/otp_totp/totpdevice/{device.pk}/change/",
            "/admin/otp_static/staticdevice/",
            f"/admin/otp_static/staticdevice/{StaticToken.objects.first().device_id}/change/",
        )
    ]
    assert "AXES: Successful login" in caplog.text  # the capture saw the portal's logs
    for secret in secrets:
        assert secret not in caplog.text
        assert secret.lower() not in caplog.text.lower()
        for page in pages:
            assert secret not in page


def test_the_waiver_lets_staff_in_with_a_password_only(client: Client, staff: User, settings: Any) -> None:
    settings.ADMIN_REQUIRE_2FA = False
    client.force_login(staff)

    assert client.get(CONNECTIONS).status_code == 200


def test_the_waiver_is_refused_outside_debug(tmp_path: Path) -> None:
    prod = production_env(tmp_path / "db.sqlite3")
    prod["ADMIN_REQUIRE_2FA"] = "false"

    assert "ADMIN_REQUIRE_2FA may be false only when DEBUG is on" in improperly_configured(manage("check", env=prod))
    dev = {"DEBUG": "true", "ADMIN_REQUIRE_2FA": "false", "DATABASE_URL": prod["DATABASE_URL"]}
    assert settings_seen(dev, "ADMIN_REQUIRE_2FA") == {"ADMIN_REQUIRE_2FA": False}
    assert settings_seen(production_env(tmp_path / "db.sqlite3"), "ADMIN_REQUIRE_2FA") == {"ADMIN_REQUIRE_2FA": True}


def test_verified_staff_keep_their_admin(client: Client, staff: User) -> None:
    login_verified(client, staff)

    assert client.get(CONNECTIONS).status_code == 200
    assert client.get(ADMIN_LOGIN)["Location"] == ADMIN
