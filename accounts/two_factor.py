"""The admin's second factor: a TOTP app, enrolled by the staff member, plus recovery codes.

Built on django-otp: TOTPDevice (RFC 6238, with replay protection and throttling of wrong
codes) and StaticDevice (single-use recovery codes). The secret is shown once, on the
enrollment page, and never logged.
"""

from __future__ import annotations

import re
from base64 import b32encode
from dataclasses import dataclass, field

import qrcode
import qrcode.image.svg
from django.db import transaction
from django.http import HttpRequest
from django.utils.safestring import SafeString, mark_safe
from django_otp import devices_for_user, login, user_has_device
from django_otp.models import Device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User

APP_DEVICE_NAME = "Authenticator app"
RECOVERY_DEVICE_NAME = "Recovery codes"
RECOVERY_CODES = 10
_TOTP_CODE = re.compile(r"\d{6}")


@dataclass(frozen=True)
class Enrollment:
    """What the enrollment page shows: a QR code and the same secret as text."""

    device_id: int
    qr_svg: SafeString = field(repr=False)
    secret: str = field(repr=False)


def is_enrolled(*, user: User) -> bool:
    return bool(user_has_device(user, confirmed=True))


def is_verified(*, request: HttpRequest) -> bool:
    """Whether this session passed the second factor (set by django_otp's middleware)."""
    check = getattr(request.user, "is_verified", None)
    return bool(check and check())


def _normalized(code: str) -> str:
    return "".join(code.split()).lower()


def enrollment_start(*, user: User) -> Enrollment:
    """The user's pending (unconfirmed) app device, created on first call.

    Reloading the page keeps the same secret, so a code scanned a moment ago still works.
    """
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name=APP_DEVICE_NAME, confirmed=False)
    image = qrcode.make(device.config_url, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    svg = image.to_string(encoding="unicode")
    secret = b32encode(device.bin_key).decode()
    return Enrollment(device_id=device.pk, qr_svg=mark_safe(svg), secret=secret)  # noqa: S308 (our own SVG)


@transaction.atomic
def enrollment_confirm(*, request: HttpRequest, user: User, code: str) -> list[str] | None:
    """Confirm the pending app device with its first code; None when the code is wrong.

    On success: the device counts, this session is verified, and a fresh set of recovery
    codes replaces any older one. They are returned to be shown once; only the device
    keeps them. Raises Throttled after too many wrong codes in a row.
    """
    device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=False).order_by("pk").first()
    token = _normalized(code)
    if device is None or not _TOTP_CODE.fullmatch(token) or not _accepts(device, token):
        return None
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    TOTPDevice.objects.filter(user=user, confirmed=False).delete()
    StaticDevice.objects.filter(user=user).delete()
    recovery = StaticDevice.objects.create(user=user, name=RECOVERY_DEVICE_NAME, confirmed=True)
    codes = [StaticToken.random_token() for _ in range(RECOVERY_CODES)]
    StaticToken.objects.bulk_create(StaticToken(device=recovery, token=token) for token in codes)
    _verified_session(request, device)
    return codes


class Throttled(Exception):
    """Too many wrong codes in a row: django-otp refuses to check more for a while."""


def verify(*, request: HttpRequest, user: User, code: str) -> bool:
    """Check a code from the app (6 digits) or a recovery code; a match verifies the session.

    Only the devices of that kind see the code, so a mistyped recovery code does not
    count against the app's throttle, nor the reverse. Raises Throttled while the
    matching devices refuse to check.
    """
    token = _normalized(code)
    kind: type[Device] = TOTPDevice if _TOTP_CODE.fullmatch(token) else StaticDevice
    throttled = False
    with transaction.atomic():
        for device in devices_for_user(user, for_verify=True):
            if not isinstance(device, kind):
                continue
            try:
                if _accepts(device, token):
                    _verified_session(request, device)
                    return True
            except Throttled:
                throttled = True
    if throttled:
        raise Throttled
    return False


def _accepts(device: Device, token: str) -> bool:
    """django-otp's check, which counts failures and then refuses for a doubling while."""
    allowed, _ = device.verify_is_allowed()
    if not allowed:
        raise Throttled
    return bool(device.verify_token(token))


def _verified_session(request: HttpRequest, device: Device) -> None:
    # A new session key at the step up, as at login: a key seen before it is worth nothing.
    request.session.cycle_key()
    login(request, device)
