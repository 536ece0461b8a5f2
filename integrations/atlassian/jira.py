"""Jira Cloud REST v3 for one site: JiraClient and the typed results it returns."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from django.views.decorators.debug import sensitive_variables

from integrations import clock
from integrations.atlassian.errors import InvalidResponseError, TransientError, UnauthorizedError
from integrations.atlassian.parse import _obj, _str
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
