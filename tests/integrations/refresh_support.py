"""Helpers shared by the refresh, access-token, Jira client and command tests."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
import responses
from django.utils import timezone

from integrations import clock
from integrations.models import ConnectionEvent, JiraConnection
from tests.conftest import TOKEN_URL

TOKEN_SECRETS = ("test-client-secret-do-not-log-a8f3c61e9b2d4075e1c9f0a7b3d5e2c4f6",)
# A valid Fernet key that encrypted nothing here: with it alone, every stored token is unreadable.
OTHER_FERNET_KEY = "b3RoZXIta2V5LW90aGVyLWtleS1vdGhlci1rZXktMDA="


class FakeClock:
    """Stands in for integrations.clock: time moves only when told, sleeps are recorded."""

    def __init__(self, start: datetime) -> None:
        self.current = start
        self.sleeps: list[float] = []
        self.on_sleep: list[Any] = []

    def now(self) -> datetime:
        return self.current

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.current += timedelta(seconds=seconds)
        for hook in self.on_sleep:
            hook()

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


def install_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(timezone.now().replace(microsecond=0))
    monkeypatch.setattr(clock, "now", fake.now)
    monkeypatch.setattr(clock, "sleep", fake.sleep)
    return fake


def token_reply(n: int | str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "access_token": f"new-access-{n}-secret",
        "refresh_token": f"new-refresh-{n}-secret",
        "expires_in": 3600,
        "scope": "read:jira-work read:jira-user read:me offline_access",
        "token_type": "Bearer",
    }
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not None}


def token_calls(mocked: responses.RequestsMock) -> list[dict[str, Any]]:
    """The JSON bodies sent to the token endpoint, in order."""
    return [json.loads(call.request.body) for call in mocked.calls if call.request.url == TOKEN_URL]


def fresh(connection: JiraConnection) -> JiraConnection:
    return JiraConnection.objects.get(pk=connection.pk)


def event_kinds(connection: JiraConnection) -> list[str]:
    return list(
        ConnectionEvent.objects.filter(connection_id=connection.pk).order_by("id").values_list("kind", flat=True)
    )


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in (*secrets, *TOKEN_SECRETS):
        assert secret not in text
