"""Session lifetime: an idle timeout and an absolute age for signed-in sessions.

Django alone offers one or the other (SESSION_COOKIE_AGE, renewed on every save when
SESSION_SAVE_EVERY_REQUEST is on, at the price of a write per request). Here the session
records when it signed in and when it was last seen; the last-seen stamp is rewritten at
most once a minute, so an active user costs one session write a minute, not one a request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse

from integrations import clock

SIGNED_IN_AT = "_signed_in_at"
LAST_SEEN_AT = "_last_seen_at"
# How stale the last-seen stamp may get before it is rewritten: the idle timeout is
# enforced to within this many seconds.
_TOUCH_EVERY = 60


def stamp_sign_in(sender: Any, request: HttpRequest, **kwargs: Any) -> None:
    """user_logged_in receiver: a sign-in starts both clocks afresh (Django keeps the
    session's data across the key rotation at login, so old stamps would linger)."""
    now = int(clock.now().timestamp())
    request.session[SIGNED_IN_AT] = now
    request.session[LAST_SEEN_AT] = now


class SessionLifetimeMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated:
            self._enforce(request)
        return self.get_response(request)

    def _enforce(self, request: HttpRequest) -> None:
        session = request.session
        now = int(clock.now().timestamp())
        # A session signed in before these stamps existed starts its clocks now.
        signed_in_at = int(session.setdefault(SIGNED_IN_AT, now))
        last_seen_at = int(session.setdefault(LAST_SEEN_AT, now))
        idle_for = now - last_seen_at
        if idle_for > settings.SESSION_IDLE_TIMEOUT:
            self._end(request, f"You were signed out after {_minutes(settings.SESSION_IDLE_TIMEOUT)} without activity.")
        elif now - signed_in_at > settings.SESSION_COOKIE_AGE:
            self._end(request, f"You were signed out {_minutes(settings.SESSION_COOKIE_AGE)} after signing in.")
        elif idle_for >= _TOUCH_EVERY:
            session[LAST_SEEN_AT] = now

    @staticmethod
    def _end(request: HttpRequest, why: str) -> None:
        logout(request)
        messages.info(request, f"{why} Please sign in again.")


def _minutes(seconds: int) -> str:
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return f"{hours} hour{'s' if hours != 1 else ''}"
    minutes = round(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
