"""Helpers for tests that drive the sandbox over HTTP (uses `requests`; the server does not).

`SandboxClient` plays the browser on the consent page and the app at the token endpoint,
and wraps the /_sandbox/ controls, so a test reads as the behaviour it checks.
"""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

from sandbox.config import SandboxConfig
from sandbox.seed import ADA

DEFAULT_SCOPES = "read:jira-work read:jira-user read:me offline_access"
TIMEOUT = 5.0
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]*)" value="([^"]*)">')


def consent_form_fields(page: str) -> dict[str, str]:
    """The hidden fields the consent page posts back (the original /authorize parameters)."""
    return {html.unescape(k): html.unescape(v) for k, v in _HIDDEN.findall(page)}


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


def approve(
    session: requests.Session,
    authorize_url: str,
    *,
    account_id: str = ADA,
    decision: str = "accept",
    timeout: float = TIMEOUT,
) -> str:
    """Open the consent page at `authorize_url`, choose an account, press a button.

    Returns the Location the sandbox redirects to (the app's callback with code or error).
    """
    page = session.get(authorize_url, timeout=timeout)
    page.raise_for_status()
    form = consent_form_fields(page.text)
    form.update(account_id=account_id, decision=decision)
    base = authorize_url.split("/authorize", 1)[0]
    answer = session.post(f"{base}/authorize", data=form, allow_redirects=False, timeout=timeout)
    if answer.status_code != 302:
        raise AssertionError(f"consent did not redirect: {answer.status_code} {answer.text[:200]}")
    return str(answer.headers["Location"])


class SandboxClient:
    def __init__(self, base_url: str, config: SandboxConfig, timeout: float = TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self.config = config
        self.timeout = timeout
        self.http = requests.Session()

    def close(self) -> None:
        self.http.close()

    # ---- the app's side ----------------------------------------------------------------
    def authorize_params(self, **overrides: str) -> dict[str, str]:
        params = {
            "audience": "api.atlassian.com",
            "client_id": self.config.client_id,
            "scope": DEFAULT_SCOPES,
            "redirect_uri": self.config.redirect_uri,
            "state": "state-123",
            "response_type": "code",
            "prompt": "consent",
        }
        params.update(overrides)
        return params

    def authorize_url(self, **overrides: str) -> str:
        return f"{self.base_url}/authorize?{urlencode(self.authorize_params(**overrides))}"

    def get_code(self, *, account_id: str = ADA, scope: str = DEFAULT_SCOPES) -> str:
        location = approve(self.http, self.authorize_url(scope=scope), account_id=account_id, timeout=self.timeout)
        return query_of(location)["code"]

    def token(self, body: dict[str, Any], **kwargs: Any) -> requests.Response:
        payload = {"client_id": self.config.client_id, "client_secret": self.config.client_secret, **body}
        kwargs.setdefault("timeout", self.timeout)
        return self.http.post(f"{self.base_url}/oauth/token", json=payload, **kwargs)

    def exchange(self, code: str, **overrides: Any) -> requests.Response:
        body = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.config.redirect_uri}
        return self.token({**body, **overrides})

    def refresh(self, refresh_token: str, **kwargs: Any) -> requests.Response:
        return self.token({"grant_type": "refresh_token", "refresh_token": refresh_token}, **kwargs)

    def connect(self, *, account_id: str = ADA, scope: str = DEFAULT_SCOPES) -> dict[str, Any]:
        """The whole consent flow; returns the token endpoint's JSON."""
        answer = self.exchange(self.get_code(account_id=account_id, scope=scope))
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def api(self, path: str, access_token: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        headers = {"Authorization": f"Bearer {access_token}", **kwargs.pop("headers", {})}
        method = kwargs.pop("method", "GET")
        return self.http.request(method, f"{self.base_url}{path}", headers=headers, **kwargs)

    # ---- controls ----------------------------------------------------------------------
    def control(self, name: str, body: Any = None) -> Any:
        url = f"{self.base_url}/_sandbox/{name}"
        if body is None:
            answer = self.http.get(url, timeout=self.timeout)
        else:
            answer = self.http.post(url, json=body, timeout=self.timeout)
        answer.raise_for_status()
        return answer.json()

    def counters(self) -> dict[str, Any]:
        result: dict[str, Any] = self.control("counters")
        return result

    def faults(self, spec: dict[str, Any]) -> None:
        self.control("faults", spec)

    def advance(self, seconds: float) -> None:
        self.control("clock", {"advance": seconds})

    def configure(self, **changes: Any) -> None:
        self.control("config", changes)
