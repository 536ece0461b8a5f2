"""Shared fixtures: alice (owner), bob (outsider), a staff member, connections."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import responses
from django.db import connection as db_connection
from django.utils import timezone

from accounts.models import User
from integrations.models import JiraConnection, JiraSite
from monitoring import recorder

ON_CI = os.environ.get("CI", "").lower() == "true"
AUTH = "https://auth.atlassian.com"
API = "https://api.atlassian.com"
TOKEN_URL = f"{AUTH}/oauth/token"
RESOURCES_URL = f"{API}/oauth/token/accessible-resources"
ME_URL = f"{API}/me"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """PostgreSQL-only tests are deselected (not skipped) on SQLite: the suite runs on
    both databases, and CI fails on any skip. Slow proofs are deselected too unless the
    run asks for them (`-m slow`, as `make proof` does, or RUN_SLOW=1)."""
    from django.conf import settings

    on_postgres = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
    # Any -m expression naming "slow" decides for itself ("slow", "not slow", ...).
    run_slow = "slow" in (config.option.markexpr or "") or os.environ.get("RUN_SLOW") == "1"
    keep, drop = [], []
    for item in items:
        unwanted = (not on_postgres and item.get_closest_marker("postgres")) or (
            not run_slow and item.get_closest_marker("slow")
        )
        (drop if unwanted else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if ON_CI and report.skipped and not hasattr(report, "wasxfail"):
        # On CI a skipped test is a missing install step, not an excuse.
        report.outcome = "failed"
        report.longrepr = f"skipped on CI (CI=true forbids skips): {report.longrepr}"


@pytest.fixture(autouse=True)
def monitoring_buffer(monkeypatch: pytest.MonkeyPatch) -> recorder._Buffer:
    """Monitoring counts are buffered per process: each test starts with none, so one
    test's refreshes never reach another's database (or its query counts)."""
    fresh = recorder._Buffer()
    monkeypatch.setattr(recorder, "_buffer", fresh)
    return fresh


def is_postgres() -> bool:
    return db_connection.vendor == "postgresql"


def chromium_path() -> str | None:
    return shutil.which("chromium") or (os.path.exists("/usr/bin/chromium") and "/usr/bin/chromium") or None


@pytest.fixture
def alice(db: None) -> User:
    return User.objects.create_user("alice@example.com", "correct horse battery staple")


@pytest.fixture
def bob(db: None) -> User:
    return User.objects.create_user("bob@example.com", "another horse battery staple")


@pytest.fixture
def staff(db: None) -> User:
    return User.objects.create_user(
        "support@example.com", "staff horse battery staple", is_staff=True, is_superuser=True
    )


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    """`responses` at Atlassian's exact URLs; any unexpected call fails the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


ConnectionFactory = Callable[..., JiraConnection]


@pytest.fixture
def make_connection(db: None) -> ConnectionFactory:
    counter = {"n": 0}

    def factory(user: User, **overrides: Any) -> JiraConnection:
        counter["n"] += 1
        n = counter["n"]
        now = timezone.now()
        sites = overrides.pop("sites", [("cloud-" + str(n), f"https://site{n}.atlassian.net", f"Site {n}")])
        values: dict[str, Any] = {
            "account_id": f"557058:account-{n}",
            "account_name": f"Account {n}",
            "account_email": f"account{n}@example.com",
            "access_token": f"access-token-{n}-secret",
            "refresh_token": f"refresh-token-{n}-secret",
            "scopes": ["read:jira-work", "read:jira-user", "read:me", "offline_access"],
            "access_token_expires_at": now + timedelta(hours=1),
            "tokens_issued_at": now,
            "first_consented_at": now,
            # In daily use unless a test says otherwise: the run keeps such connections warm.
            "last_used_at": now,
        }
        values.update(overrides)
        connection = JiraConnection.objects.create(user=user, **values)
        for cloud_id, url, name in sites:
            JiraSite.objects.create(connection=connection, cloud_id=cloud_id, url=url, name=name)
        return connection

    return factory
