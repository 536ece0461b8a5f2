"""The OAuth 2.0 (3LO) calls: the consent URL, the token endpoint (code exchange and
refresh), and the two identity endpoints (accessible-resources, /me)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import requests
from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from integrations import clock
from integrations.atlassian.errors import (
    ClientCredentialsError,
    CodeInvalidError,
    GrantRevokedError,
    InvalidResponseError,
    MissingRefreshTokenError,
    RateLimitedError,
    TransientError,
)
from integrations.atlassian.parse import _image_url, _str, _str_list
from integrations.atlassian.transport import (
    _api_url,
    _auth_url,
    _json,
    _raise_for_api_error,
    _send,
    parse_retry_after,
)

logger = logging.getLogger(__name__)

# Atlassian documents 3600 s; a reply outside this range is not believed.
DEFAULT_EXPIRES_IN = 3600
MAX_EXPIRES_IN = 24 * 3600
# Margin taken off every expiry, so a token is never used in its last minute.
EXPIRY_MARGIN = timedelta(seconds=60)


@dataclass(frozen=True)
class TokenSet:
    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: datetime
    scopes: list[str]


@dataclass(frozen=True)
class Site:
    cloud_id: str
    name: str
    url: str
    avatar_url: str
    scopes: list[str]


@dataclass(frozen=True)
class Identity:
    account_id: str
    name: str
    email: str
    picture: str  # safe to render as an image source (see _image_url), or ""


def authorize_url(*, state: str) -> str:
    query = urlencode(
        {
            "audience": "api.atlassian.com",
            "client_id": settings.ATLASSIAN_CLIENT_ID,
            "scope": " ".join(settings.ATLASSIAN_SCOPES),
            "redirect_uri": settings.ATLASSIAN_REDIRECT_URI,
            "state": state,
            "response_type": "code",
            "prompt": "consent",
        },
        quote_via=quote,
    )
    return f"{_auth_url('/authorize')}?{query}"


def _error_code(body: Any) -> str:
    if isinstance(body, Mapping):
        code = body.get("error")
        if isinstance(code, str):
            return code
    return ""


def _shown(code: str) -> str:
    # The provider's code is echoed into messages that end up in logs, pages and text
    # columns: printable and short only (PostgreSQL refuses a NUL in text).
    return "".join(char for char in code if char.isprintable())[:64]


def _raise_for_token_error(response: requests.Response, *, exchanging_code: bool) -> None:
    status = response.status_code
    body = _json(response)
    code = _error_code(body)
    shown = _shown(code)
    if status == 429:
        raise RateLimitedError(
            "Atlassian is rate limiting token requests.",
            status=status,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    if status >= 500:
        raise TransientError(f"Atlassian's token endpoint failed (HTTP {status}).", status=status)
    # Decide on the error code, never on the description (which is free text).
    if code == "invalid_client" or (status == 401 and code in ("access_denied", "")):
        raise ClientCredentialsError(
            "Atlassian refused this portal's client credentials (check ATLASSIAN_CLIENT_ID and "
            "ATLASSIAN_CLIENT_SECRET).",
            status=status,
        )
    if exchanging_code:
        raise CodeInvalidError(
            f"Atlassian refused the authorization code (HTTP {status}{', ' + shown if shown else ''}).",
            status=status,
        )
    if code in ("invalid_grant", "unauthorized_client"):
        raise GrantRevokedError(f"Atlassian says the grant is no longer valid ({code}).", status=status)
    raise TransientError(
        f"Atlassian's token endpoint answered HTTP {status}{' ' + shown if shown else ''}.", status=status
    )


def _expires_in(raw: Any) -> int:
    if raw is None:
        logger.warning("Token reply has no expires_in; assuming %s s.", DEFAULT_EXPIRES_IN)
        return DEFAULT_EXPIRES_IN
    if isinstance(raw, bool):
        return 0
    if isinstance(raw, str):
        # float(), not str.isdigit() + int(): "²" is a digit that int() refuses, and
        # an exception here would drop a pair Atlassian has already rotated.
        with contextlib.suppress(ValueError):
            raw = float(raw.strip())
    if not isinstance(raw, int | float) or raw != raw:
        logger.warning("Token reply has a malformed expires_in; treating the token as expired.")
        return 0
    return int(max(0, min(raw, MAX_EXPIRES_IN)))


def _nonempty_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if isinstance(value, str) and value.strip() and "\x00" not in value:
        return value
    return None


@sensitive_variables("payload", "body")
def _token_request(payload: dict[str, str], *, exchanging_code: bool) -> TokenSet:
    # Expiry counts from when the request left, not when the reply came back.
    sent_at = clock.now()
    response = _send("POST", _auth_url("/oauth/token"), json=payload, headers={"Accept": "application/json"})
    if response.status_code != 200:
        _raise_for_token_error(response, exchanging_code=exchanging_code)
    body = _json(response)
    if not isinstance(body, Mapping):
        raise InvalidResponseError("Atlassian's token reply was not JSON.", status=response.status_code)
    access_token = _nonempty_str(body, "access_token")
    if access_token is None:
        raise InvalidResponseError("Atlassian's token reply has no access_token.", status=response.status_code)
    refresh_token = _nonempty_str(body, "refresh_token")
    expires_in = _expires_in(body.get("expires_in"))
    scope = body.get("scope")
    scopes = scope.split() if isinstance(scope, str) else []
    return TokenSet(
        access_token=access_token,
        refresh_token=refresh_token,
        expires_at=sent_at + timedelta(seconds=expires_in) - EXPIRY_MARGIN,
        scopes=scopes,
    )


@sensitive_variables("code", "payload")
def exchange_code(*, code: str) -> TokenSet:
    payload = {
        "grant_type": "authorization_code",
        "client_id": settings.ATLASSIAN_CLIENT_ID,
        "client_secret": settings.ATLASSIAN_CLIENT_SECRET,
        "code": code,
        "redirect_uri": settings.ATLASSIAN_REDIRECT_URI,
    }
    tokens = _token_request(payload, exchanging_code=True)
    if tokens.refresh_token is None:
        raise MissingRefreshTokenError(
            "Atlassian returned no refresh token: add offline_access to ATLASSIAN_SCOPES and to the "
            "app's permissions in the developer console."
        )
    return tokens


@sensitive_variables("refresh_token", "payload")
def refresh(*, refresh_token: str) -> TokenSet:
    """Rotate the pair. The reply's refresh_token may be None: keep the old one then."""
    payload = {
        "grant_type": "refresh_token",
        "client_id": settings.ATLASSIAN_CLIENT_ID,
        "client_secret": settings.ATLASSIAN_CLIENT_SECRET,
        "refresh_token": refresh_token,
    }
    return _token_request(payload, exchanging_code=False)


@sensitive_variables("access_token")
def _bearer_get(path: str, *, access_token: str) -> Any:
    response = _send(
        "GET",
        _api_url(path),
        headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
    )
    if response.status_code != 200:
        _raise_for_api_error(response)
    body = _json(response)
    if body is None:
        raise InvalidResponseError(f"Atlassian's reply to {path} was not JSON.", status=response.status_code)
    return body


@sensitive_variables("access_token")
def accessible_resources(*, access_token: str) -> list[Site]:
    body = _bearer_get("/oauth/token/accessible-resources", access_token=access_token)
    if not isinstance(body, list):
        raise InvalidResponseError("accessible-resources did not return a list.")
    # One entry per product on a site is possible: merge them by cloud id.
    sites: dict[str, Site] = {}
    for item in body:
        if not isinstance(item, Mapping):
            continue
        cloud_id, url = _str(item, "id"), _str(item, "url")
        if not cloud_id or not url.startswith("https://"):
            continue
        scopes = _str_list(item.get("scopes"))
        if cloud_id in sites:
            merged = sorted(set(sites[cloud_id].scopes) | set(scopes))
            sites[cloud_id] = Site(
                cloud_id, sites[cloud_id].name, sites[cloud_id].url, sites[cloud_id].avatar_url, merged
            )
        else:
            sites[cloud_id] = Site(
                cloud_id, _str(item, "name")[:255], url[:500], _image_url(item, "avatarUrl")[:1000], scopes
            )
    return sorted(sites.values(), key=lambda s: (s.name.lower(), s.url))


@sensitive_variables("access_token")
def me(*, access_token: str) -> Identity:
    body = _bearer_get("/me", access_token=access_token)
    if not isinstance(body, Mapping) or not _str(body, "account_id"):
        raise InvalidResponseError("/me did not return an account_id.")
    return Identity(
        account_id=_str(body, "account_id")[:128],
        name=(_str(body, "name") or _str(body, "nickname"))[:255],
        email=_str(body, "email")[:254],
        picture=_image_url(body, "picture")[:1000],
    )
