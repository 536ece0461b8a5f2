"""The only module that talks HTTP to Atlassian.

Every call has a timeout (settings.ATLASSIAN_TIMEOUT), every JSON reply is checked at
this edge and turned into a small dataclass, and every failure becomes one of the
AtlassianError classes below, split into permanent and transient ones. Tokens, codes
and the client secret never reach a log line or an exception message.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import requests
from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from integrations import clock
from jiraconnect.hosts import is_loopback

logger = logging.getLogger(__name__)

# Atlassian documents 3600 s; a reply outside this range is not believed.
DEFAULT_EXPIRES_IN = 3600
MAX_EXPIRES_IN = 24 * 3600
# Margin taken off every expiry, so a token is never used in its last minute.
EXPIRY_MARGIN = timedelta(seconds=60)
MAX_RETRY_AFTER = 300.0


# --- Errors ---------------------------------------------------------------------------


class AtlassianError(Exception):
    """Base class. `permanent` errors need the user to reconnect; others may pass."""

    permanent: bool = False
    reason: str = "atlassian_error"

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after


class TransientError(AtlassianError):
    """Network trouble, timeouts, 429, 5xx, or a garbled reply: try again later."""

    reason = "transient"


class RateLimitedError(TransientError):
    reason = "rate_limited"


class InvalidResponseError(TransientError):
    """Atlassian answered 2xx with a body that is not what the docs describe."""

    reason = "invalid_response"


class GrantRevokedError(AtlassianError):
    """invalid_grant / unauthorized_client: the refresh token is dead for good."""

    permanent = True
    reason = "grant_revoked"


class CodeInvalidError(AtlassianError):
    """The authorization code was refused (late, reused, or redirect_uri mismatch)."""

    permanent = True
    reason = "code_invalid"


class ClientCredentialsError(AtlassianError):
    """Our client id/secret were refused: the app's misconfiguration, no user's fault."""

    reason = "client_credentials"


class MissingRefreshTokenError(AtlassianError):
    """No refresh_token in a code exchange: offline_access is missing from the scopes."""

    reason = "missing_offline_access"


class UnauthorizedError(AtlassianError):
    """A 401 from an API call: the access token is expired or revoked."""

    reason = "unauthorized"


class ScopeMismatchError(AtlassianError):
    """The gateway's 401 "scope does not match": refreshing cannot help."""

    permanent = True
    reason = "scope_mismatch"


class ApiError(AtlassianError):
    """Any other non-2xx reply from a Jira REST call (400, 403, 404, 410…)."""

    reason = "api_error"


# --- Results --------------------------------------------------------------------------


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


# --- Transport ------------------------------------------------------------------------

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


def _clean(value: str) -> str:
    # PostgreSQL text and jsonb refuse NUL: one in a provider string would fail the write.
    return value.replace("\x00", "")


def _str(item: Mapping[str, Any], key: str) -> str:
    value = item.get(key)
    return _clean(value) if isinstance(value, str) else ""


def _image_url(item: Mapping[str, Any], key: str) -> str:
    """A URL we will render as an image source, or "".

    https is kept. So is plain http on ATLASSIAN_API_URL's own origin when that origin is
    loopback: the local sandbox serves its avatars there. Any other scheme (http elsewhere,
    javascript:, data:) is dropped.
    """
    value = _str(item, key)
    if value.startswith("https://"):
        return value
    api = urlsplit(settings.ATLASSIAN_API_URL)
    # A prefix match up to the "/" that ends the authority: parsing `value` instead could
    # disagree with the browser's parser (userinfo, backslashes) about which host it names.
    if api.scheme == "http" and is_loopback(api.hostname) and value.startswith(f"http://{api.netloc}/"):
        return value
    return ""


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str_list(value: Any) -> list[str]:
    return [_clean(v) for v in value if isinstance(v, str)] if isinstance(value, list) else []


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


# --- Jira REST v3 client ------------------------------------------------------------------


@dataclass(frozen=True)
class JiraIssue:
    id: str
    key: str
    summary: str
    status: str
    status_category: str
    priority: str
    updated: str
    browse_url: str


@dataclass(frozen=True)
class IssuePage:
    issues: list[JiraIssue]
    next_page_token: str | None
    is_last: bool


class TokenProvider:
    """What JiraClient needs from the connection layer (implemented by lifecycle.access.ConnectionTokens)."""

    def access_token(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def refreshed_access_token(self, *, rejected: str) -> str:  # pragma: no cover - interface
        raise NotImplementedError


class JiraClient:
    """Jira Cloud REST v3 for one site, through api.atlassian.com.

    A 401 triggers one refresh and one retry (never for a scope 401); 429 and 503 honour
    Retry-After a bounded number of times, for idempotent calls only; everything else
    raises a typed error.
    """

    MAX_RETRIES = 3
    BACKOFF_START = 5.0
    BACKOFF_CAP = 30.0
    # A longer Retry-After is handed to the caller (on the error) rather than slept
    # through: a web worker must not hang for minutes.
    MAX_WAIT = 30.0

    def __init__(
        self,
        *,
        cloud_id: str,
        site_url: str,
        tokens: TokenProvider,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.cloud_id = cloud_id
        self.site_url = site_url.rstrip("/")
        self.tokens = tokens
        self._sleep = sleep or clock.sleep

    def __repr__(self) -> str:
        return f"<JiraClient cloud_id={self.cloud_id!r} site={self.site_url!r}>"

    def _url(self, path: str) -> str:
        return _api_url(f"/ex/jira/{quote(self.cloud_id, safe='')}/rest/api/3/{path.lstrip('/')}")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        # Atlassian's advice: exponential from 5 s, capped at 30 s, jitter x0.7-1.3.
        return min(self.BACKOFF_CAP, self.BACKOFF_START * float(2**attempt) * random.uniform(0.7, 1.3))

    @sensitive_variables("token")
    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        idempotent: bool | None = None,
    ) -> Any:
        """One REST call; `idempotent` (default: GET/HEAD only) allows 429/503 retries."""
        retryable = method.upper() in ("GET", "HEAD") if idempotent is None else idempotent
        token = self.tokens.access_token()
        refreshed = False
        attempt = 0
        while True:
            response = _send(
                method,
                self._url(path),
                params=params,
                json=json,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            )
            if 200 <= response.status_code < 300:
                if response.status_code == 204:
                    return None
                body = _json(response)
                if body is None:
                    raise InvalidResponseError(f"Jira's reply to {path} was not JSON.", status=response.status_code)
                return body
            try:
                _raise_for_api_error(response)
            except UnauthorizedError:
                if refreshed:
                    raise
                refreshed = True
                token = self.tokens.refreshed_access_token(rejected=token)
                continue
            except TransientError as exc:
                # Only reads (and the idempotent search POST) are retried, and only
                # on 429/503, where Atlassian tells us to come back.
                if not retryable or exc.status not in (429, 503) or attempt >= self.MAX_RETRIES:
                    raise
                delay = self._delay(attempt, exc.retry_after)
                if delay > self.MAX_WAIT:
                    raise
                self._sleep(delay)
                attempt += 1
                continue

    def myself(self) -> Mapping[str, Any]:
        body = self.request("GET", "myself")
        if not isinstance(body, Mapping):
            raise InvalidResponseError("myself did not return an object.")
        return body

    def search_jql(
        self,
        *,
        jql: str,
        fields: list[str],
        max_results: int = 20,
        next_page_token: str | None = None,
    ) -> IssuePage:
        payload: dict[str, Any] = {"jql": jql, "fields": fields, "maxResults": max_results}
        if next_page_token:
            payload["nextPageToken"] = next_page_token
        body = self.request("POST", "search/jql", json=payload, idempotent=True)
        if not isinstance(body, Mapping) or not isinstance(body.get("issues"), list):
            raise InvalidResponseError("search/jql did not return an issue list.")
        issues = [issue for issue in (self._issue(raw) for raw in body["issues"]) if issue is not None]
        token = body.get("nextPageToken")
        is_last = body.get("isLast")
        next_token = token if isinstance(token, str) and token else None
        return IssuePage(
            issues=issues,
            next_page_token=next_token,
            is_last=bool(is_last) if isinstance(is_last, bool) else next_token is None,
        )

    def _issue(self, raw: Any) -> JiraIssue | None:
        if not isinstance(raw, Mapping) or not _str(raw, "key"):
            return None
        fields = _obj(raw.get("fields"))
        status = _obj(fields.get("status"))
        category = _obj(status.get("statusCategory"))
        priority = _obj(fields.get("priority"))
        key = _str(raw, "key")
        return JiraIssue(
            id=_str(raw, "id"),
            key=key,
            summary=_str(fields, "summary"),
            status=_str(status, "name"),
            status_category=_str(category, "key"),
            priority=_str(priority, "name"),
            updated=_str(fields, "updated"),
            browse_url=f"{self.site_url}/browse/{quote(key)}",
        )

    def iter_issues(self, *, jql: str, fields: list[str], page_size: int = 50) -> Iterator[JiraIssue]:
        token: str | None = None
        while True:
            page = self.search_jql(jql=jql, fields=fields, max_results=page_size, next_page_token=token)
            yield from page.issues
            if page.is_last or not page.next_page_token:
                return
            token = page.next_page_token
