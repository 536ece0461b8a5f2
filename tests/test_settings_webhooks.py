"""The webhook settings: on by default with their scope, off cleanly, a callback URL
that is https (or loopback), and a start-up warning for a setup that cannot work."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.processes import improperly_configured, manage, production_env, settings_seen

ATLASSIAN = {
    "ATLASSIAN_CLIENT_ID": "portal-client-id",
    "ATLASSIAN_CLIENT_SECRET": "portal-client-secret",
    "ATLASSIAN_REDIRECT_URI": "https://portal.example.com/integrations/jira/callback/",
    "SITE_URL": "https://portal.example.com",
}


@pytest.fixture
def prod(tmp_path: Path) -> dict[str, str]:
    return {**production_env(tmp_path / "db.sqlite3"), **ATLASSIAN}


def test_webhooks_are_on_by_default_and_their_scope_is_requested(prod: dict[str, str]) -> None:
    seen = settings_seen(prod, "ATLASSIAN_WEBHOOKS", "ATLASSIAN_SCOPES", "ATLASSIAN_WEBHOOK_URL")

    assert seen["ATLASSIAN_WEBHOOKS"] is True
    assert seen["ATLASSIAN_SCOPES"] == [
        "read:jira-work",
        "read:jira-user",
        "read:me",
        "offline_access",
        "manage:jira-webhook",
    ]
    assert seen["ATLASSIAN_WEBHOOK_URL"] == ""


def test_webhooks_off_drops_the_scope_from_the_default(prod: dict[str, str]) -> None:
    prod["ATLASSIAN_WEBHOOKS"] = "false"

    seen = settings_seen(prod, "ATLASSIAN_WEBHOOKS", "ATLASSIAN_SCOPES")

    assert seen["ATLASSIAN_WEBHOOKS"] is False
    assert "manage:jira-webhook" not in seen["ATLASSIAN_SCOPES"]


def test_production_with_webhooks_passes_the_checks(prod: dict[str, str]) -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=prod)

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "value", ["http://portal.example.com/hook/", "ftp://portal.example.com/", "https://u:p@x.com/"]
)
def test_a_webhook_url_that_is_not_https_or_loopback_stops_start_up(prod: dict[str, str], value: str) -> None:
    prod["ATLASSIAN_WEBHOOK_URL"] = value

    assert "ATLASSIAN_WEBHOOK_URL" in improperly_configured(manage("check", env=prod))


def test_a_loopback_webhook_url_keeps_its_path(prod: dict[str, str]) -> None:
    prod["ATLASSIAN_WEBHOOK_URL"] = "http://127.0.0.1:8000/integrations/jira/webhook/"

    seen = settings_seen(prod, "ATLASSIAN_WEBHOOK_URL")

    assert seen["ATLASSIAN_WEBHOOK_URL"] == "http://127.0.0.1:8000/integrations/jira/webhook/"


def test_scopes_without_the_webhook_scope_are_warned_about(prod: dict[str, str]) -> None:
    prod["ATLASSIAN_SCOPES"] = "read:jira-work read:jira-user read:me offline_access"

    result = manage("check", "--fail-level", "WARNING", env=prod)

    assert result.returncode != 0
    assert "integrations.W001" in result.stdout + result.stderr


def test_a_plain_http_site_url_is_warned_about(prod: dict[str, str]) -> None:
    prod["SITE_URL"] = "http://portal.example.com"

    result = manage("check", "--fail-level", "WARNING", env=prod)

    assert result.returncode != 0
    assert "integrations.W002" in result.stdout + result.stderr
