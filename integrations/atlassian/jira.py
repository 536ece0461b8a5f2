"""Jira Cloud REST v3 for one site: JiraClient and the typed results it returns."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

from django.views.decorators.debug import sensitive_variables

from integrations import clock
from integrations.atlassian.errors import InvalidResponseError, TransientError, UnauthorizedError
from integrations.atlassian.parse import _clean, _obj, _str, _str_list
from integrations.atlassian.transport import _api_url, _json, _raise_for_api_error, _send


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


@dataclass(frozen=True)
class WebhookSpec:
    """One dynamic webhook to register: Jira events and a jqlFilter in the supported subset."""

    events: tuple[str, ...]
    jql_filter: str


@dataclass(frozen=True)
class WebhookRegistration:
    """Atlassian's answer for one requested webhook, in request order: an id or errors."""

    webhook_id: int | None
    errors: tuple[str, ...] = ()

    @property
    def created(self) -> bool:
        return self.webhook_id is not None


@dataclass(frozen=True)
class RegisteredWebhook:
    """A webhook Atlassian knows for this app, user and site (GET /webhook)."""

    id: int
    events: tuple[str, ...]
    jql_filter: str
    expires_at: datetime | None


# Jira pages the webhook list; a user has at most 5 per site, so one page is the norm.
WEBHOOK_PAGE_SIZE = 100
MAX_WEBHOOK_PAGES = 20


def _webhook_id(value: Any) -> int | None:
    # bool is an int in Python; an id is not.
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def parse_expiration(value: Any) -> datetime | None:
    """Atlassian's expirationDate: the schema says int64 milliseconds, the examples show
    "2019-06-01T12:42:30.000+0000". Both are accepted; anything else is None."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        text = _clean(value).strip()
        for fmt in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
            try:
                return datetime.strptime(text, fmt)
            except ValueError:
                continue
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else None
    return None


class TokenProvider(Protocol):
    """What JiraClient needs from the connection layer: any object with these two methods."""

    def access_token(self) -> str: ...

    def refreshed_access_token(self, *, rejected: str) -> str: ...


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
                # 204, or 202 with no body (DELETE webhook): nothing to decode.
                if response.status_code == 204 or not response.content:
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

    # --- Dynamic webhooks (scopes read:jira-work + manage:jira-webhook) ----------------

    def register_webhooks(self, *, url: str, webhooks: Sequence[WebhookSpec]) -> list[WebhookRegistration]:
        """POST /webhook. Atlassian answers 200 even when some failed: one result per
        requested webhook, in request order, each an id or its errors."""
        payload = {
            "url": url,
            "webhooks": [{"events": list(spec.events), "jqlFilter": spec.jql_filter} for spec in webhooks],
        }
        body = self.request("POST", "webhook", json=payload)
        results = body.get("webhookRegistrationResult") if isinstance(body, Mapping) else None
        if not isinstance(results, list) or len(results) != len(webhooks):
            raise InvalidResponseError("webhook registration did not return one result per webhook.")
        registrations = []
        for raw in results:
            item = _obj(raw)
            webhook_id = _webhook_id(item.get("createdWebhookId"))
            errors = tuple(e[:300] for e in _str_list(item.get("errors")))[:5]
            if webhook_id is None and not errors:
                errors = ("Jira registered nothing and gave no reason.",)
            registrations.append(WebhookRegistration(webhook_id=webhook_id, errors=() if webhook_id else errors))
        return registrations

    def list_webhooks(self) -> list[RegisteredWebhook]:
        """GET /webhook, every page: the webhooks this app registered for this user here."""
        found: list[RegisteredWebhook] = []
        start = 0
        for _ in range(MAX_WEBHOOK_PAGES):
            body = self.request("GET", "webhook", params={"startAt": start, "maxResults": WEBHOOK_PAGE_SIZE})
            values = body.get("values") if isinstance(body, Mapping) else None
            if not isinstance(values, list):
                raise InvalidResponseError("webhook list did not return a page of values.")
            for raw in values:
                item = _obj(raw)
                webhook_id = _webhook_id(item.get("id"))
                if webhook_id is None:
                    continue
                found.append(
                    RegisteredWebhook(
                        id=webhook_id,
                        events=tuple(_str_list(item.get("events"))),
                        jql_filter=_str(item, "jqlFilter"),
                        expires_at=parse_expiration(item.get("expirationDate")),
                    )
                )
            is_last = body.get("isLast")
            if is_last is True or not values or (is_last is None and len(values) < WEBHOOK_PAGE_SIZE):
                return found
            start += len(values)
        raise InvalidResponseError("webhook list never ended.")

    def refresh_webhooks(self, ids: Sequence[int]) -> datetime:
        """PUT /webhook/refresh: extends the webhooks' 30 days and returns the new expiry.
        Atlassian silently ignores ids it does not know: list to find those."""
        body = self.request("PUT", "webhook/refresh", json={"webhookIds": list(ids)}, idempotent=True)
        expires_at = parse_expiration(body.get("expirationDate")) if isinstance(body, Mapping) else None
        if expires_at is None:
            raise InvalidResponseError("webhook refresh did not return an expirationDate.")
        return expires_at

    def delete_webhooks(self, ids: Sequence[int]) -> None:
        """DELETE /webhook (202). Ids of other apps or unknown ones are ignored by Jira."""
        self.request("DELETE", "webhook", json={"webhookIds": list(ids)}, idempotent=True)
