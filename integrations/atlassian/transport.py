"""HTTP to Atlassian: one pooled Session per thread, one timeout, typed failures.

`_send` is the only place a request leaves the portal. Replies from the API base
(api.atlassian.com) that are not 2xx become errors here, shared by the OAuth helpers
(/me, accessible-resources) and the Jira client.
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from integrations import clock
from integrations.atlassian.errors import (
    ApiError,
    RateLimitedError,
    ScopeMismatchError,
    TransientError,
    UnauthorizedError,
)

MAX_RETRY_AFTER = 300.0

_local = threading.local()


def _session() -> requests.Session:
    # One pooled Session per thread: Sessions are not safe to share across threads.
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        # trust_env off: otherwise every call re-reads proxy variables and ~/.netrc
        # (a sixth of a refresh's CPU), and a .netrc entry for the host would replace
        # our Bearer header. Proxies from the environment are read once, here.
        session.trust_env = False
        session.proxies.update(urllib.request.getproxies())
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=16)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.headers["User-Agent"] = "jiraconnect/1.0"
        _local.session = session
    return session


def _auth_url(path: str) -> str:
    return f"{settings.ATLASSIAN_AUTH_URL}{path}"


def _api_url(path: str) -> str:
    return f"{settings.ATLASSIAN_API_URL}{path}"


# kwargs carries the token request body (client secret, code, refresh token) or the
# Bearer header, and so do the frames of requests/urllib3 below this one: hide every
# variable (no names = all) in an error report.
@sensitive_variables()
def _send(method: str, url: str, **kwargs: Any) -> requests.Response:
    try:
        return _session().request(method, url, timeout=settings.ATLASSIAN_TIMEOUT, allow_redirects=False, **kwargs)
    except requests.Timeout as exc:
        raise TransientError(f"Atlassian did not answer in time ({type(exc).__name__}).") from None
    except requests.RequestException as exc:
        raise TransientError(f"Could not reach Atlassian ({type(exc).__name__}).") from None


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or HTTP date), bounded."""
    if not value:
        return None
    value = value.strip()
    seconds: float | None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - (now or clock.now())).total_seconds()
        except (TypeError, ValueError, OverflowError):
            return None
    if seconds != seconds:  # NaN
        return None
    return max(0.0, min(seconds, MAX_RETRY_AFTER))


def _raise_for_api_error(response: requests.Response) -> None:
    status = response.status_code
    body = _json(response)
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status == 401:
        message = body.get("message") if isinstance(body, Mapping) else None
        if isinstance(message, str) and "scope does not match" in message:
            raise ScopeMismatchError("The connection lacks a scope this call needs; reconnect to grant it.", status=401)
        raise UnauthorizedError("Atlassian refused the access token.", status=401)
    if status == 429:
        raise RateLimitedError("Atlassian is rate limiting this app.", status=429, retry_after=retry_after)
    if status >= 500:
        raise TransientError(f"Atlassian answered HTTP {status}.", status=status, retry_after=retry_after)
    messages: list[str] = []
    if isinstance(body, Mapping) and isinstance(body.get("errorMessages"), list):
        messages = [str(m)[:200] for m in body["errorMessages"] if isinstance(m, str)][:3]
    detail = f": {'; '.join(messages)}" if messages else ""
    raise ApiError(f"Jira answered HTTP {status}{detail}", status=status)
