"""Atlassian's real URLs (what `responses` answers at) and the token endpoint's replies."""

from __future__ import annotations

import json
from typing import Any

import responses

AUTH = "https://auth.atlassian.com"
API = "https://api.atlassian.com"
AUTHORIZE_URL = f"{AUTH}/authorize"
TOKEN_URL = f"{AUTH}/oauth/token"
RESOURCES_URL = f"{API}/oauth/token/accessible-resources"
ME_URL = f"{API}/me"
SCOPES = "read:jira-work read:jira-user read:me offline_access"


def token_reply(n: int | str = 1, **overrides: Any) -> dict[str, Any]:
    """The token endpoint's JSON with the `n`th pair; an override of None drops that field."""
    body: dict[str, Any] = {
        "access_token": f"new-access-{n}-secret",
        "refresh_token": f"new-refresh-{n}-secret",
        "expires_in": 3600,
        "scope": SCOPES,
        "token_type": "Bearer",
    }
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not None}


def token_calls(mocked: responses.RequestsMock) -> list[dict[str, Any]]:
    """The JSON bodies sent to the token endpoint, in order."""
    return [json.loads(call.request.body) for call in mocked.calls if call.request.url == TOKEN_URL]
