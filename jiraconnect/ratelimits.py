"""Abuse limits on the endpoints that send mail, create accounts, check passwords or start
an OAuth flow: fixed-window counters (django-ratelimit) in the cache all workers share.

A limited request is answered by templates/429.html with Retry-After and never reaches
its view: no mail goes out, no user is created, no OAuth state is issued.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.utils.cache import add_never_cache_headers
from django_ratelimit.core import get_usage
from redis.exceptions import RedisError

from accounts.models import normalize_email

logger = logging.getLogger(__name__)

View = Callable[..., HttpResponseBase]
Key = str | Callable[[str, HttpRequest], str]


def client_ip(request: HttpRequest) -> str:
    """The address a per-IP limit counts.

    REMOTE_ADDR, unless TRUSTED_PROXY_COUNT = n > 0: then the n-th X-Forwarded-For entry
    from the right, the one our outermost proxy saw (each of our n proxies appends the
    address it was called from; whatever a client wrote itself stands further left and is
    never read). A header shorter than n, or an entry that is no address, falls back to
    REMOTE_ADDR.
    """
    remote = str(request.META.get("REMOTE_ADDR") or "")
    hops: int = settings.TRUSTED_PROXY_COUNT
    if hops:
        forwarded = [part.strip() for part in str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",")]
        if len(forwarded) >= hops and _is_address(forwarded[-hops]):
            return forwarded[-hops]
    if not _is_address(remote):
        raise ImproperlyConfigured(
            "The client address (REMOTE_ADDR) is missing; behind a proxy set TRUSTED_PROXY_COUNT."
        )
    return remote


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def submitted_address(field: str) -> Callable[[str, HttpRequest], str]:
    """The email address a form posts, as the login and reset forms will match it: one
    counter per account whatever the case or spacing an attacker varies."""

    def key(group: str, request: HttpRequest) -> str:
        return normalize_email(request.POST.get(field, ""))

    return key


@dataclass(frozen=True)
class Limit:
    """One counter: `group` names it, `key` says whose (django-ratelimit's "ip", "user" or
    a callable), `setting` names the settings attribute holding its rate (read per request,
    so tests and operators can change it)."""

    group: str
    key: Key
    setting: str


def _rate(setting: str) -> Callable[[str, HttpRequest], str | None]:
    def rate(group: str, request: HttpRequest) -> str | None:
        value: str | None = getattr(settings, setting)
        return value

    return rate


def _seconds_left(limit: Limit, request: HttpRequest) -> int | None:
    """Count this request against `limit`; seconds until its window ends when over it."""
    try:
        usage = get_usage(
            request, group=limit.group, key=limit.key, rate=_rate(limit.setting), method="POST", increment=True
        )
    except (DatabaseError, RedisError, OSError):
        # Fail open: an unreachable cache must not stop everyone signing in. Logged so
        # the outage is seen; django-axes still guards passwords meanwhile.
        logger.exception("Abuse limit %s not checked: the cache is unavailable.", limit.group)
        return None
    if usage is None or not usage["should_limit"]:
        return None
    return max(1, int(usage["time_left"]))


def too_many_requests(request: HttpRequest, *, retry_after: int) -> HttpResponse:
    minutes = math.ceil(retry_after / 60)
    wait = f"{retry_after} seconds" if retry_after < 90 else f"{minutes} minutes"
    response = render(request, "429.html", {"wait": wait}, status=429)
    response["Retry-After"] = str(retry_after)
    add_never_cache_headers(response)
    return response


def rate_limited(*limits: Limit) -> Callable[[View], View]:
    """Count every POST against each of `limits`; over any of them, answer 429 instead of
    calling the view. GETs (showing the form) are never counted."""

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponseBase:
            if request.method == "POST":
                # Every counter sees the request, so one being over does not hide the others.
                over = {limit.group: left for limit in limits if (left := _seconds_left(limit, request)) is not None}
                if over:
                    logger.warning("Abuse limit reached on %s: %s.", request.path, ", ".join(over))
                    return too_many_requests(request, retry_after=max(over.values()))
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


SIGNUP = (Limit("signup-ip", "ip", "RATE_LIMIT_SIGNUP_PER_IP"),)
LOGIN = (
    Limit("login-ip", "ip", "RATE_LIMIT_LOGIN_PER_IP"),
    Limit("login-address", submitted_address("username"), "RATE_LIMIT_LOGIN_PER_ADDRESS"),
)
PASSWORD_RESET = (
    Limit("password-reset-ip", "ip", "RATE_LIMIT_PASSWORD_RESET_PER_IP"),
    Limit("password-reset-address", submitted_address("email"), "RATE_LIMIT_PASSWORD_RESET_PER_ADDRESS"),
)
JIRA_CONNECT = (Limit("jira-connect-user", "user", "RATE_LIMIT_JIRA_CONNECT_PER_USER"),)
