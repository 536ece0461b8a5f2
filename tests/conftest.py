"""Shared fixtures: alice (owner), bob (outsider), a staff member, connections.

Constants and helpers live in tests/support; conftest files only define fixtures and hooks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import responses
from django.core.cache import cache

from accounts.models import User
from monitoring import recorder
from tests.support.accounts import ALICE_PASSWORD, BOB_PASSWORD, STAFF_PASSWORD
from tests.support.clock import FakeClock, install_clock
from tests.support.connections import ConnectionFactory, connection_factory

ON_CI = os.environ.get("CI", "").lower() == "true"


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
def _fresh_abuse_counters(request: pytest.FixtureRequest) -> None:
    """The cache (abuse-limit counters) is a database table: rolled back with each plain
    `db` test, but committed by transactional ones (live_server), where one test's
    sign-ups would otherwise count against the next."""
    marker = request.node.get_closest_marker("django_db")
    if (
        "transactional_db" in request.fixturenames
        or "live_server" in request.fixturenames
        or (marker is not None and marker.kwargs.get("transaction"))
    ):
        request.getfixturevalue("transactional_db")
        cache.clear()


@pytest.fixture(autouse=True)
def monitoring_buffer(monkeypatch: pytest.MonkeyPatch) -> recorder._Buffer:
    """Monitoring counts are buffered per process: each test starts with none, so one
    test's refreshes never reach another's database (or its query counts)."""
    fresh = recorder._Buffer()
    monkeypatch.setattr(recorder, "_buffer", fresh)
    return fresh


@pytest.fixture
def alice(db: None) -> User:
    return User.objects.create_user("alice@example.com", ALICE_PASSWORD)


@pytest.fixture
def bob(db: None) -> User:
    return User.objects.create_user("bob@example.com", BOB_PASSWORD)


@pytest.fixture
def staff(db: None) -> User:
    return User.objects.create_user("support@example.com", STAFF_PASSWORD, is_staff=True, is_superuser=True)


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    """`responses` at Atlassian's exact URLs; any unexpected call fails the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def make_connection(db: None) -> ConnectionFactory:
    return connection_factory()


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """integrations.clock stopped at now: time moves only when the test says so."""
    return install_clock(monkeypatch)
