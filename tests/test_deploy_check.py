"""Production settings pass Django's deployment checklist at warning level."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.processes import manage, production_env, settings_seen


@pytest.fixture
def prod(tmp_path: Path) -> dict[str, str]:
    return production_env(tmp_path / "x.sqlite3")


def deploy_check(env: dict[str, str]) -> tuple[int, str]:
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    return result.returncode, result.stdout + result.stderr


def test_production_settings_pass_the_deploy_check(prod: dict[str, str]) -> None:
    returncode, output = deploy_check(prod)

    assert returncode == 0, output
    assert "System check identified no issues" in output


def test_production_settings_with_hsts_preload_pass_the_deploy_check(prod: dict[str, str]) -> None:
    prod["SECURE_HSTS_PRELOAD"] = "true"

    returncode, output = deploy_check(prod)

    assert returncode == 0, output


def test_deploy_check_catches_a_weakened_production_setting(prod: dict[str, str]) -> None:
    # Proves the check above runs with --deploy at warning level and can fail.
    prod["SECURE_HSTS_SECONDS"] = "0"

    returncode, output = deploy_check(prod)

    assert returncode != 0
    assert "security.W004" in output


def test_production_cookies_and_headers_are_locked_down(prod: dict[str, str]) -> None:
    seen = settings_seen(
        prod,
        "DEBUG",
        "SESSION_COOKIE_SAMESITE",
        "SESSION_COOKIE_SECURE",
        "SESSION_COOKIE_HTTPONLY",
        "CSRF_COOKIE_SECURE",
        "CSRF_COOKIE_HTTPONLY",
        "SECURE_HSTS_SECONDS",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS",
        "SECURE_SSL_REDIRECT",
        "SECURE_CONTENT_TYPE_NOSNIFF",
        "SECURE_REFERRER_POLICY",
        "X_FRAME_OPTIONS",
    )

    assert seen["DEBUG"] is False
    # Lax, not Strict: the top-level return from Atlassian must carry the session.
    assert seen["SESSION_COOKIE_SAMESITE"] == "Lax"
    assert seen["SESSION_COOKIE_SECURE"] is True
    assert seen["SESSION_COOKIE_HTTPONLY"] is True
    assert seen["CSRF_COOKIE_SECURE"] is True
    assert seen["CSRF_COOKIE_HTTPONLY"] is True
    assert seen["SECURE_HSTS_SECONDS"] >= 31_536_000
    assert seen["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert seen["SECURE_SSL_REDIRECT"] is True
    assert seen["SECURE_CONTENT_TYPE_NOSNIFF"] is True
    assert seen["SECURE_REFERRER_POLICY"] == "same-origin"
    assert seen["X_FRAME_OPTIONS"] == "DENY"
