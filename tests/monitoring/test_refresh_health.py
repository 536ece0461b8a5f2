"""/healthz/refresh: "refresh is not running" once the scheduled run is overdue."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client, override_settings

from integrations.lifecycle.run import RunOptions, refresh_due
from monitoring.models import REFRESH_RUN, RunHeartbeat
from tests.support.clock import FakeClock, install_clock
from tests.support.processes import improperly_configured, manage, production_env, settings_seen

pytestmark = pytest.mark.django_db

STALE_AFTER = timedelta(minutes=30)


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    return install_clock(monkeypatch)


def check(client: Client) -> tuple[int, dict[str, object]]:
    with override_settings(REFRESH_STALE_AFTER=STALE_AFTER):
        response = client.get("/healthz/refresh")
    assert "no-store" in response["Cache-Control"]
    return response.status_code, response.json()


def test_is_not_found_unless_a_stale_age_is_configured(client: Client) -> None:
    assert client.get("/healthz/refresh").status_code == 404


def test_a_run_that_just_finished_means_refresh_is_running(client: Client, frozen: FakeClock) -> None:
    refresh_due(RunOptions(concurrency=1))
    frozen.advance(minutes=29)

    status, body = check(client)

    assert status == 200
    assert body == {
        "status": "ok",
        "refresh": "running",
        "last_success": (frozen.now() - timedelta(minutes=29)).isoformat(),
        "age_seconds": 29 * 60,
        "stale_after_seconds": 1800,
    }


def test_a_run_older_than_the_stale_age_means_refresh_is_not_running(client: Client, frozen: FakeClock) -> None:
    RunHeartbeat.objects.create(name=REFRESH_RUN, last_success_at=frozen.now() - timedelta(minutes=31))

    status, body = check(client)

    assert status == 503
    assert body["refresh"] == "not running"
    assert body["age_seconds"] == 31 * 60


def test_no_run_ever_means_refresh_is_not_running(client: Client, frozen: FakeClock) -> None:
    status, body = check(client)

    assert status == 503
    assert body["refresh"] == "not running"
    assert body["last_success"] is None


def test_plain_healthz_stays_up_while_refresh_is_not_running(client: Client, frozen: FakeClock) -> None:
    # A load balancer checks /healthz: a dead cron must not take the web hosts out.
    with override_settings(REFRESH_STALE_AFTER=STALE_AFTER):
        assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(("value", "seconds"), [("30m", 1800), ("2h", 7200), ("900s", 900), ("1d", 86400)])
def test_the_stale_age_is_read_with_its_unit(tmp_path: Path, value: str, seconds: int) -> None:
    code = "from django.conf import settings as s; print(s.REFRESH_STALE_AFTER.total_seconds())"
    env = {**production_env(tmp_path / "db.sqlite3"), "REFRESH_STALE_AFTER": value}

    result = manage("shell", "-c", code, env=env)

    assert result.returncode == 0, result.stderr
    assert float(result.stdout.strip().splitlines()[-1]) == seconds


def test_the_stale_age_is_off_by_default(tmp_path: Path) -> None:
    assert settings_seen(production_env(tmp_path / "db.sqlite3"), "REFRESH_STALE_AFTER") == {
        "REFRESH_STALE_AFTER": None
    }


@pytest.mark.parametrize("value", ["30", "0m", "-5m", "thirty minutes", "1.5h"])
def test_a_stale_age_without_a_unit_or_not_positive_fails_naming_it(tmp_path: Path, value: str) -> None:
    env = {**production_env(tmp_path / "db.sqlite3"), "REFRESH_STALE_AFTER": value}

    assert "REFRESH_STALE_AFTER" in improperly_configured(manage("check", env=env))
