"""A strict local token server for the concurrency proofs: the sandbox with leeway 0.

Real HTTP on 127.0.0.1 (not `responses`), so threads and OS processes of the portal race
for real. With leeway 0 a spent refresh token is dead at once and any reuse kills the
whole grant, as Atlassian does after its 10-minute leeway. One sandbox account is one
refresh-token lineage: /_sandbox/refreshes counts the refreshes of each.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from django.conf import settings
from django.db import connection
from django.test import override_settings

from sandbox.server import Sandbox, SandboxConfig


class StrictTokenServer:
    def __init__(self, *, client_secret: str | None = None, latency_ms: float = 0.0) -> None:
        self.sandbox = Sandbox(
            SandboxConfig(
                port=0,
                leeway=0,
                client_id=settings.ATLASSIAN_CLIENT_ID,
                client_secret=client_secret or settings.ATLASSIAN_CLIENT_SECRET,
            )
        )
        self.latency_ms = latency_ms

    def __enter__(self) -> StrictTokenServer:
        self.sandbox.start()
        self.set_latency(self.latency_ms)
        return self

    def __exit__(self, *exc: object) -> None:
        self.sandbox.stop()

    @property
    def url(self) -> str:
        return self.sandbox.url

    def portal_settings(self) -> override_settings:
        return override_settings(ATLASSIAN_AUTH_URL=self.url, ATLASSIAN_API_URL=self.url)

    def _control(self, method: str, path: str, body: Any = None) -> Any:
        response = requests.request(method, self.url + path, json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def set_latency(self, milliseconds: float) -> None:
        # Each refresh takes this long, as over a real network: a second refresher
        # reads the same refresh token before the first one has stored the new one.
        self._control("POST", "/_sandbox/faults", {"token": {"latency_ms": milliseconds}})

    def mint(self, count: int) -> list[dict[str, Any]]:
        """`count` grants, each its own account: {account_id, access_token, refresh_token, ...}."""
        return list(self._control("POST", "/_sandbox/grants", {"count": count}))

    def counters(self) -> dict[str, Any]:
        return dict(self._control("GET", "/_sandbox/counters"))

    def refreshes_by_account(self) -> dict[str, int]:
        return dict(self._control("GET", "/_sandbox/refreshes")["by_account"])


def database_url() -> str:
    """The test database, as the child processes must be told it."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def command_env(server: StrictTokenServer) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url(),
        "TEST_ATLASSIAN_SERVER_URL": server.url,
        # Exactly this environment: no developer .env in the project folder.
        "JIRACONNECT_ENV_FILE": "",
        "LOG_LEVEL": "WARNING",
    }
