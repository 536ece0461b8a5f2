"""What django-axes asks of the portal: whose attempt it was, and the lockout page."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from axes.helpers import get_cool_off
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache

from accounts.models import normalize_email


def attempted_username(request: HttpRequest, credentials: dict[str, Any] | None = None) -> str | None:
    """The address a login attempt named, spelled as login matches it (any case, trimmed)."""
    raw = (credentials or {}).get("username") or request.POST.get("username")
    return normalize_email(raw) if isinstance(raw, str) and raw.strip() else None


@never_cache
def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict[str, Any] | None = None
) -> HttpResponse:
    """429 with the moment the lock ends: this attempt (recorded by axes) restarts the cool-off."""
    cool_off = get_cool_off(request)
    attempted: datetime = getattr(request, "axes_attempt_time", None) or timezone.now()
    context = {"retry_at": None, "retry_minutes": None}
    if cool_off is not None:
        context = {
            "retry_at": attempted + cool_off,
            "retry_minutes": max(1, math.ceil(cool_off.total_seconds() / 60)),
        }
    return render(request, "registration/locked_out.html", context, status=429)
