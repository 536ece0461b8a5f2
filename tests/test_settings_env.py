"""jiraconnect/settings.py reads the environment and refuses to start half-configured.

Each case starts `manage.py` in a child process with only the variables it names.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.support.processes import improperly_configured, manage, production_env, settings_seen
from tests.support.secrets import assert_no_secrets


@pytest.fixture
def prod(tmp_path: Path) -> dict[str, str]:
    return production_env(tmp_path / "db.sqlite3")


def test_complete_production_environment_starts(prod: dict[str, str]) -> None:
    result = manage("check", env=prod)

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_development_needs_nothing_but_debug_and_uses_the_console_for_email(tmp_path: Path) -> None:
    seen = settings_seen(
        {"DEBUG": "true", "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}, "DEBUG", "EMAIL_BACKEND"
    )

    assert seen["DEBUG"] is True
    assert seen["EMAIL_BACKEND"] == "django.core.mail.backends.console.EmailBackend"


def test_production_uses_exactly_the_given_fernet_keys(prod: dict[str, str]) -> None:
    second = Fernet.generate_key().decode()
    prod["FERNET_KEYS"] = f"{prod['FERNET_KEYS']}, {second}"

    seen = settings_seen(prod, "DEBUG", "FERNET_KEYS", "EMAIL_BACKEND")

    assert seen["DEBUG"] is False
    assert seen["FERNET_KEYS"] == [prod["FERNET_KEYS"].split(",")[0], second]
    assert seen["EMAIL_BACKEND"] == "django.core.mail.backends.console.EmailBackend"


@pytest.mark.parametrize("name", ["SECRET_KEY", "FERNET_KEYS", "ALLOWED_HOSTS"])
@pytest.mark.parametrize("value", [None, "", "  ", " , "], ids=["unset", "empty", "blank", "only-commas"])
def test_debug_off_without_a_required_setting_fails_naming_it(
    prod: dict[str, str], name: str, value: str | None
) -> None:
    # FERNET_KEYS is never derived from SECRET_KEY in production, though one is set here.
    if value is None:
        del prod[name]
    else:
        prod[name] = value

    assert name in improperly_configured(manage("check", env=prod))


@pytest.mark.parametrize(
    "value",
    ["short-key", "django-insecure-local-development-key-never-use-in-production"],
    ids=["short", "the-development-key"],
)
def test_debug_off_with_a_weak_secret_key_fails_naming_it(prod: dict[str, str], value: str) -> None:
    prod["SECRET_KEY"] = value

    assert "SECRET_KEY" in improperly_configured(manage("check", env=prod))


def test_debug_off_is_the_default(prod: dict[str, str]) -> None:
    del prod["DEBUG"]
    del prod["SECRET_KEY"]

    assert "SECRET_KEY" in improperly_configured(manage("check", env=prod))


@pytest.mark.parametrize(
    "value",
    [
        "not-a-fernet-key",
        "c2hvcnQta2V5LTE2Ynl0ZQ==",  # valid base64, 16 bytes
        "{good},bad-second-key-00000000000000000000000000",
    ],
    ids=["garbage", "wrong-length", "second-of-two"],
)
def test_malformed_fernet_keys_fail_naming_it_without_echoing_them(prod: dict[str, str], value: str) -> None:
    prod["FERNET_KEYS"] = value.format(good=Fernet.generate_key().decode())

    result = manage("check", env=prod)

    assert "FERNET_KEYS" in improperly_configured(result)
    assert_no_secrets({"stdout": result.stdout, "stderr": result.stderr}, *prod["FERNET_KEYS"].split(","))


@pytest.mark.parametrize("value", ["maybe", "2", "True!"])
def test_debug_that_is_not_a_boolean_fails_naming_it(prod: dict[str, str], value: str) -> None:
    prod["DEBUG"] = value

    message = improperly_configured(manage("check", env=prod))

    assert message.startswith("DEBUG ")
    assert repr(value) in message


@pytest.mark.parametrize("name", ["ATLASSIAN_AUTH_URL", "ATLASSIAN_API_URL"])
@pytest.mark.parametrize(
    "value",
    [
        "http://example.com",
        "http://localhost.evil.com",
        "http://127.0.0.1.nip.io",
        "ftp://127.0.0.1",
        "https://",
        "auth.atlassian.com",
        "https://auth.atlassian.com:notaport",
        "https://auth.atlassian.com/?x=1",
        "https://auth.atlassian.com/#frag",
    ],
)
def test_endpoint_url_that_is_not_https_or_loopback_http_is_refused(
    prod: dict[str, str], name: str, value: str
) -> None:
    prod[name] = value

    assert improperly_configured(manage("check", env=prod)).startswith(f"{name} ")


def test_endpoint_url_with_credentials_is_refused_without_echoing_them(prod: dict[str, str]) -> None:
    prod["ATLASSIAN_AUTH_URL"] = "https://user:s3cret-pass@auth.atlassian.com"

    result = manage("check", env=prod)

    assert improperly_configured(result).startswith("ATLASSIAN_AUTH_URL ")
    assert_no_secrets(result.stderr, "s3cret-pass")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://127.0.0.1:8001", "http://127.0.0.1:8001"),
        ("http://localhost:8001/", "http://localhost:8001"),
        ("http://[::1]:8001", "http://[::1]:8001"),
        ("https://auth.atlassian.com/", "https://auth.atlassian.com"),
    ],
)
def test_https_or_loopback_http_endpoint_is_accepted(prod: dict[str, str], value: str, expected: str) -> None:
    prod["ATLASSIAN_AUTH_URL"] = value

    assert settings_seen(prod, "ATLASSIAN_AUTH_URL")["ATLASSIAN_AUTH_URL"] == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONN_MAX_AGE", "forever"),
        ("CONN_MAX_AGE", "-1"),
        ("DATABASE_POOL_MAX_SIZE", "four"),
        ("DATABASE_POOL_MIN_SIZE", "-1"),
        ("DATABASE_POOL_TIMEOUT", "0"),
        ("SECURE_HSTS_SECONDS", "one year"),
        ("ATLASSIAN_CONNECT_TIMEOUT", "0"),
        ("ATLASSIAN_READ_TIMEOUT", "inf"),
        ("ATLASSIAN_READ_TIMEOUT", "soon"),
        ("DATABASE_URL", "notaurl"),
        ("DATABASE_URL", "foo://x/y"),
        ("DATABASE_URL", "postgres://db.example.com:5432"),  # no database name
        ("DATABASE_URL", "postgres://db.example.com:notaport/jiraconnect"),
        ("DATABASE_URL", "sqlite://db.sqlite3"),  # two slashes: silently an in-memory database
        ("EMAIL_URL", "garbage"),
        ("EMAIL_URL", "smtp://"),
        ("EMAIL_URL", "smtp://smtp.example.com:notaport"),
        ("LOG_LEVEL", "bogus"),
        ("LOG_LEVEL", "WARN ING"),
        ("RATE_LIMIT_LOGIN_PER_IP", "lots"),
        ("RATE_LIMIT_LOGIN_PER_IP", "10"),
        ("RATE_LIMIT_PASSWORD_RESET_PER_ADDRESS", "0/h"),
        ("RATE_LIMIT_PASSWORD_RESET_PER_ADDRESS", "3/0h"),
        ("RATE_LIMIT_JIRA_CONNECT_PER_USER", "10/w"),
        ("TRUSTED_PROXY_COUNT", "-1"),
        ("SESSION_IDLE_TIMEOUT", "30"),
        ("SESSION_IDLE_TIMEOUT", "86400"),  # longer than the absolute age
        ("REDIS_URL", "http://cache.internal:6379"),
        ("REDIS_URL", "cache.internal:6379"),
    ],
)
def test_malformed_setting_fails_naming_it(prod: dict[str, str], name: str, value: str) -> None:
    prod[name] = value

    assert improperly_configured(manage("check", env=prod)).startswith(f"{name} ")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "postgres://portal:s3cret-pass@db.example.com:notaport/jiraconnect"),
        ("EMAIL_URL", "smtp+tls://portal:s3cret-pass@smtp.example.com:notaport"),
        ("REDIS_URL", "http://:s3cret-pass@cache.internal:6379"),
    ],
)
def test_malformed_url_fails_without_echoing_its_password(prod: dict[str, str], name: str, value: str) -> None:
    prod[name] = value

    result = manage("check", env=prod)

    assert improperly_configured(result).startswith(f"{name} ")
    assert_no_secrets({"stdout": result.stdout, "stderr": result.stderr}, "s3cret-pass")


def test_well_formed_database_email_and_log_settings_are_read(prod: dict[str, str]) -> None:
    prod["DATABASE_URL"] = "postgres://portal:pass@db.example.com:5432/jiraconnect"
    prod["EMAIL_URL"] = "smtp+tls://portal:pass@smtp.example.com:587"
    prod["LOG_LEVEL"] = "warning"

    seen = settings_seen(prod, "DATABASES", "EMAIL_BACKEND", "EMAIL_HOST", "EMAIL_PORT", "LOG_LEVEL")

    database = seen["DATABASES"]["default"]
    assert (database["ENGINE"], database["HOST"], database["PORT"], database["NAME"]) == (
        "django.db.backends.postgresql",
        "db.example.com",
        5432,
        "jiraconnect",
    )
    assert (seen["EMAIL_BACKEND"], seen["EMAIL_HOST"], seen["EMAIL_PORT"]) == (
        "django.core.mail.backends.smtp.EmailBackend",
        "smtp.example.com",
        587,
    )
    assert seen["LOG_LEVEL"] == "WARNING"


POSTGRES_URL = "postgres://portal:pass@db.example.com:5432/jiraconnect"


def test_postgresql_uses_a_small_connection_pool_by_default(prod: dict[str, str]) -> None:
    prod["DATABASE_URL"] = POSTGRES_URL

    database = settings_seen(prod, "DATABASES")["DATABASES"]["default"]

    assert database["OPTIONS"]["pool"] == {"min_size": 1, "max_size": 4, "timeout": 30.0}
    # Django refuses a pool with persistent connections: the pool keeps them instead.
    assert database["CONN_MAX_AGE"] == 0


def test_pool_sizes_come_from_the_environment_and_zero_turns_the_pool_off(prod: dict[str, str]) -> None:
    prod.update(
        DATABASE_URL=POSTGRES_URL, DATABASE_POOL_MAX_SIZE="8", DATABASE_POOL_MIN_SIZE="2", DATABASE_POOL_TIMEOUT="5"
    )
    sized = settings_seen(prod, "DATABASES")["DATABASES"]["default"]
    prod.update(DATABASE_POOL_MAX_SIZE="0", DATABASE_POOL_MIN_SIZE="0", CONN_MAX_AGE="30")
    unpooled = settings_seen(prod, "DATABASES")["DATABASES"]["default"]

    assert sized["OPTIONS"]["pool"] == {"min_size": 2, "max_size": 8, "timeout": 5.0}
    assert "pool" not in unpooled["OPTIONS"]
    assert unpooled["CONN_MAX_AGE"] == 30


def test_pool_minimum_above_its_maximum_fails_naming_both(prod: dict[str, str]) -> None:
    prod.update(DATABASE_URL=POSTGRES_URL, DATABASE_POOL_MAX_SIZE="2", DATABASE_POOL_MIN_SIZE="3")

    message = improperly_configured(manage("check", env=prod))

    assert message.startswith("DATABASE_POOL_MIN_SIZE (3) must not exceed DATABASE_POOL_MAX_SIZE (2)")


def test_sqlite_has_no_pool(prod: dict[str, str]) -> None:
    database = settings_seen(prod, "DATABASES")["DATABASES"]["default"]

    assert "pool" not in database["OPTIONS"]


ATLASSIAN = {
    "ATLASSIAN_CLIENT_ID": "portal-client-id",
    "ATLASSIAN_CLIENT_SECRET": "portal-client-secret",
    "ATLASSIAN_REDIRECT_URI": "https://portal.example.com/integrations/jira/callback/",
}


def test_complete_atlassian_settings_start(prod: dict[str, str]) -> None:
    prod.update(ATLASSIAN)

    assert settings_seen(prod, "ATLASSIAN_CLIENT_ID")["ATLASSIAN_CLIENT_ID"] == "portal-client-id"


# (case, DEBUG, the variable changed, its value or None for unset, what the message says).
# Non-absolute redirect URIs are tried with DEBUG on, where the https rule (which would
# refuse them too) does not apply: each case shows its own check at work.
ATLASSIAN_HALF_CONFIGURED: list[tuple[str, str, str, str | None, str]] = [
    ("no-client-secret", "false", "ATLASSIAN_CLIENT_SECRET", None, "must be set"),
    ("empty-client-secret", "false", "ATLASSIAN_CLIENT_SECRET", "", "must be set"),
    ("no-redirect-uri", "false", "ATLASSIAN_REDIRECT_URI", None, "must be set"),
    ("empty-redirect-uri", "false", "ATLASSIAN_REDIRECT_URI", "", "must be set"),
    ("relative-redirect-uri", "true", "ATLASSIAN_REDIRECT_URI", "/jira/callback/", "not an absolute URL"),
    ("scheme-less-redirect-uri", "true", "ATLASSIAN_REDIRECT_URI", "portal.example.com/cb/", "not an absolute URL"),
    ("host-less-redirect-uri", "true", "ATLASSIAN_REDIRECT_URI", "https:///jira/callback/", "not an absolute URL"),
    ("ftp-redirect-uri", "true", "ATLASSIAN_REDIRECT_URI", "ftp://portal.example.com/cb/", "not an absolute URL"),
    ("http-redirect-uri-debug-off", "false", "ATLASSIAN_REDIRECT_URI", "http://portal.example.com/cb/", "https"),
]


@pytest.mark.parametrize(
    ("case", "debug", "name", "value", "says"),
    ATLASSIAN_HALF_CONFIGURED,
    ids=[case[0] for case in ATLASSIAN_HALF_CONFIGURED],
)
def test_client_id_with_a_missing_or_bad_companion_setting_fails_naming_it(
    prod: dict[str, str], case: str, debug: str, name: str, value: str | None, says: str
) -> None:
    prod.update(ATLASSIAN, DEBUG=debug)
    if value is None:
        del prod[name]
    else:
        prod[name] = value

    message = improperly_configured(manage("check", env=prod))

    assert message.startswith(f"{name} ")
    assert says in message


def test_http_redirect_uri_is_accepted_with_debug_on(prod: dict[str, str]) -> None:
    # Local development against a tunnel or the sandbox: https is required only in production.
    prod.update(ATLASSIAN, DEBUG="true", ATLASSIAN_REDIRECT_URI="http://127.0.0.1:8000/integrations/jira/callback/")

    seen = settings_seen(prod, "ATLASSIAN_REDIRECT_URI")

    assert seen["ATLASSIAN_REDIRECT_URI"] == "http://127.0.0.1:8000/integrations/jira/callback/"


def test_env_file_named_by_jiraconnect_env_file_is_read(prod: dict[str, str], tmp_path: Path) -> None:
    env_file = tmp_path / "portal.env"
    env_file.write_text("ALLOWED_HOSTS=from-file.example.com\n")
    del prod["ALLOWED_HOSTS"]
    prod["JIRACONNECT_ENV_FILE"] = str(env_file)

    assert settings_seen(prod, "ALLOWED_HOSTS")["ALLOWED_HOSTS"] == ["from-file.example.com"]


def test_real_environment_wins_over_the_env_file(prod: dict[str, str], tmp_path: Path) -> None:
    env_file = tmp_path / "portal.env"
    env_file.write_text("ALLOWED_HOSTS=from-file.example.com\nDEBUG=maybe\n")
    prod["JIRACONNECT_ENV_FILE"] = str(env_file)

    assert settings_seen(prod, "ALLOWED_HOSTS")["ALLOWED_HOSTS"] == ["portal.example.com"]


def test_jiraconnect_env_file_naming_a_missing_file_fails_naming_it(prod: dict[str, str], tmp_path: Path) -> None:
    prod["JIRACONNECT_ENV_FILE"] = str(tmp_path / "missing.env")

    assert improperly_configured(manage("check", env=prod)).startswith("JIRACONNECT_ENV_FILE ")


# --- Security settings (issue 11) ------------------------------------------------------


@pytest.mark.parametrize("hosts", ["portal.example.com", "127.0.0.1,portal.example.com", "*", ".example.com"])
def test_debug_without_a_secret_key_refuses_any_host_but_this_machine(tmp_path: Path, hosts: str) -> None:
    env = {"DEBUG": "true", "ALLOWED_HOSTS": hosts, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}

    assert improperly_configured(manage("check", env=env)).startswith("SECRET_KEY must be set when DEBUG is on")


@pytest.mark.parametrize("hosts", ["127.0.0.1,localhost,::1,[::1]", None])
def test_debug_without_a_secret_key_starts_when_only_this_machine_is_allowed(tmp_path: Path, hosts: str | None) -> None:
    env = {"DEBUG": "true", "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    if hosts is not None:
        env["ALLOWED_HOSTS"] = hosts

    assert settings_seen(env, "DEBUG")["DEBUG"] is True


def test_production_cookies_carry_the_host_prefix(prod: dict[str, str]) -> None:
    seen = settings_seen(
        prod,
        "SESSION_COOKIE_NAME",
        "CSRF_COOKIE_NAME",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SESSION_COOKIE_DOMAIN",
        "CSRF_COOKIE_DOMAIN",
        "SESSION_COOKIE_PATH",
        "CSRF_COOKIE_PATH",
    )

    # __Host- cookies are dropped by browsers unless Secure, Path=/ and without Domain.
    assert seen == {
        "SESSION_COOKIE_NAME": "__Host-sessionid",
        "CSRF_COOKIE_NAME": "__Host-csrftoken",
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SESSION_COOKIE_DOMAIN": None,
        "CSRF_COOKIE_DOMAIN": None,
        "SESSION_COOKIE_PATH": "/",
        "CSRF_COOKIE_PATH": "/",
    }


def test_production_defaults_for_sessions_reset_links_cache_and_limits(prod: dict[str, str]) -> None:
    seen = settings_seen(
        prod,
        "SESSION_COOKIE_AGE",
        "SESSION_IDLE_TIMEOUT",
        "PASSWORD_RESET_TIMEOUT",
        "CACHES",
        "TRUSTED_PROXY_COUNT",
        "RATE_LIMIT_PASSWORD_RESET_PER_ADDRESS",
    )

    assert seen["SESSION_COOKIE_AGE"] == 12 * 3600
    assert seen["SESSION_IDLE_TIMEOUT"] == 30 * 60
    assert seen["PASSWORD_RESET_TIMEOUT"] == 3600
    assert seen["CACHES"]["default"]["BACKEND"] == "django.core.cache.backends.db.DatabaseCache"
    assert seen["TRUSTED_PROXY_COUNT"] == 0
    assert seen["RATE_LIMIT_PASSWORD_RESET_PER_ADDRESS"] == "3/h"


def test_redis_url_makes_redis_the_shared_cache(prod: dict[str, str]) -> None:
    prod["REDIS_URL"] = "redis://:s3cret-pass@cache.internal:6379/2"

    cache = settings_seen(prod, "CACHES")["CACHES"]["default"]

    assert cache["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert cache["LOCATION"] == "redis://:s3cret-pass@cache.internal:6379/2"


def test_limits_sessions_and_proxies_are_read_from_the_environment(prod: dict[str, str]) -> None:
    prod.update(
        {
            "RATE_LIMIT_LOGIN_PER_IP": "100/10M",
            "RATE_LIMIT_SIGNUP_PER_IP": "off",
            "TRUSTED_PROXY_COUNT": "1",
            "SESSION_COOKIE_AGE": "28800",
            "SESSION_IDLE_TIMEOUT": "900",
        }
    )

    seen = settings_seen(
        prod,
        "RATE_LIMIT_LOGIN_PER_IP",
        "RATE_LIMIT_SIGNUP_PER_IP",
        "TRUSTED_PROXY_COUNT",
        "SESSION_COOKIE_AGE",
        "SESSION_IDLE_TIMEOUT",
    )

    assert seen == {
        "RATE_LIMIT_LOGIN_PER_IP": "100/10m",
        "RATE_LIMIT_SIGNUP_PER_IP": None,
        "TRUSTED_PROXY_COUNT": 1,
        "SESSION_COOKIE_AGE": 28800,
        "SESSION_IDLE_TIMEOUT": 900,
    }
