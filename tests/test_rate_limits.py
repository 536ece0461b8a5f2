"""Abuse limits: sign-up per IP, login per IP and per address, password reset per address
and per IP, Jira connect per user. Each runs on both shared caches the portal supports:
the database (the default) and Redis (REDIS_URL).

A limited request gets the 429 page with Retry-After and has no effect.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import django_ratelimit.core
import pytest
import redis
from django.contrib.auth import SESSION_KEY
from django.core import mail
from django.db import connection
from django.test import Client

from accounts.models import User
from tests.support.accounts import logged_in
from tests.support.oauth import CONNECT_PATH, pending_states

REDIS_TEST_URL = "redis://127.0.0.1:6379/0"
SIGNUP = "/accounts/signup/"
LOGIN = "/accounts/login/"
RESET = "/accounts/password_reset/"
ALICE_PASSWORD = "correct horse battery staple"


@pytest.fixture(params=["database", "redis"])
def shared_cache(request: pytest.FixtureRequest, settings: Any, db: None) -> Iterator[str]:
    """The default cache as production configures it; Redis keys under a prefix of this
    test's own, deleted afterwards (nothing else in that Redis is touched)."""
    if request.param == "redis":
        server = redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=2)
        try:
            server.ping()
        except redis.RedisError as exc:
            pytest.skip(f"no Redis at {REDIS_TEST_URL} ({exc}); .ci/run installs and starts one")
        prefix = f"jiraconnect-test-{uuid.uuid4().hex}"
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": REDIS_TEST_URL,
                "KEY_PREFIX": prefix,
            }
        }
        try:
            yield prefix
        finally:
            keys = list(server.scan_iter(f"{prefix}:*"))
            if keys:
                server.delete(*keys)
            server.close()
    else:
        yield "database"


def counters_stored(backend: str) -> int:
    """How many counters the shared store holds: proof the limits live there, not in a
    worker's memory."""
    if backend == "database":
        with connection.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM jiraconnect_cache")
            return int(cursor.fetchone()[0])
    server = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        return len(list(server.scan_iter(f"{backend}:*")))
    finally:
        server.close()


def assert_limited(response: Any, *, period: int) -> None:
    assert response.status_code == 429
    assert "Too many attempts" in response.content.decode()
    assert 0 < int(response["Retry-After"]) <= period
    assert "no-store" in response["Cache-Control"]


def from_ip(address: str) -> Client:
    return Client(REMOTE_ADDR=address)


def test_five_password_reset_posts_for_one_address_send_three_emails(
    shared_cache: str, client: Client, alice: User
) -> None:
    answers = [client.post(RESET, {"email": "alice@example.com"}, REMOTE_ADDR=f"10.0.0.{n}") for n in range(5)]

    assert [a.status_code for a in answers] == [302, 302, 302, 429, 429]
    assert_limited(answers[3], period=3600)
    assert [m.to for m in mail.outbox] == [["alice@example.com"]] * 3
    assert counters_stored(shared_cache) > 0


def test_the_reset_limit_per_address_ignores_case_and_spacing(shared_cache: str, client: Client, alice: User) -> None:
    for spelling in ["alice@example.com", "ALICE@example.com", " Alice@Example.COM "]:
        client.post(RESET, {"email": spelling})

    response = client.post(RESET, {"email": "alice@EXAMPLE.com"})

    assert_limited(response, period=3600)
    assert len(mail.outbox) == 3


def test_password_reset_is_limited_per_ip_across_addresses(
    shared_cache: str, alice: User, bob: User, settings: Any
) -> None:
    settings.RATE_LIMIT_PASSWORD_RESET_PER_IP = "4/h"
    client = from_ip("203.0.113.9")
    for n in range(4):
        assert client.post(RESET, {"email": f"nobody{n}@example.com"}).status_code == 302

    limited = client.post(RESET, {"email": "bob@example.com"})
    elsewhere = from_ip("203.0.113.10").post(RESET, {"email": "alice@example.com"})

    assert_limited(limited, period=3600)
    assert elsewhere.status_code == 302
    assert [m.to for m in mail.outbox] == [["alice@example.com"]]


def test_a_limited_address_may_ask_again_once_the_window_has_passed(
    shared_cache: str, client: Client, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(3):
        client.post(RESET, {"email": "alice@example.com"})
    limited = client.post(RESET, {"email": "alice@example.com"})
    later = time.time() + int(limited["Retry-After"]) + 1
    monkeypatch.setattr(django_ratelimit.core, "time", SimpleNamespace(time=lambda: later))

    response = client.post(RESET, {"email": "alice@example.com"})

    assert response.status_code == 302
    assert len(mail.outbox) == 4


def test_showing_the_forms_is_never_counted(shared_cache: str, client: Client) -> None:
    for _ in range(40):
        client.get(RESET)
        client.get(LOGIN)
        client.get(SIGNUP)

    assert client.post(RESET, {"email": "alice@example.com"}).status_code == 302
    assert client.get(SIGNUP).status_code == 200


def test_login_is_limited_per_address_even_from_many_ips(shared_cache: str, alice: User) -> None:
    for n in range(10):
        wrong = from_ip(f"198.51.100.{n}").post(LOGIN, {"username": "alice@example.com", "password": f"guess {n}"})
        assert wrong.status_code == 200

    right = from_ip("198.51.100.200")
    response = right.post(LOGIN, {"username": "Alice@Example.com", "password": ALICE_PASSWORD})

    assert_limited(response, period=15 * 60)
    assert SESSION_KEY not in right.session


def test_login_is_limited_per_ip_across_many_addresses(shared_cache: str, alice: User) -> None:
    client = from_ip("192.0.2.7")
    for n in range(30):
        client.post(LOGIN, {"username": f"stuffed{n}@example.com", "password": "leaked password 1"})

    response = client.post(LOGIN, {"username": "alice@example.com", "password": ALICE_PASSWORD})
    elsewhere = from_ip("192.0.2.8")
    allowed = elsewhere.post(LOGIN, {"username": "alice@example.com", "password": ALICE_PASSWORD})

    assert_limited(response, period=5 * 60)
    assert SESSION_KEY not in client.session
    assert allowed.status_code == 302
    assert elsewhere.session[SESSION_KEY] == str(alice.pk)


def test_sign_up_is_limited_per_ip_and_a_limited_one_creates_nobody(shared_cache: str, db: None) -> None:
    form = {"password1": "saffron lighthouse gravel 77", "password2": "saffron lighthouse gravel 77"}
    for n in range(10):
        response = from_ip("192.0.2.50").post(SIGNUP, {"email": f"new{n}@example.com", **form})
        assert response.status_code == 302

    limited = from_ip("192.0.2.50").post(SIGNUP, {"email": "eleventh@example.com", **form})
    other = from_ip("192.0.2.51").post(SIGNUP, {"email": "neighbour@example.com", **form})

    assert_limited(limited, period=3600)
    assert not User.objects.filter(email="eleventh@example.com").exists()
    assert other.status_code == 302
    assert User.objects.count() == 11


def test_jira_connect_is_limited_per_user_and_a_limited_one_issues_no_state(
    shared_cache: str, alice: User, bob: User
) -> None:
    client = logged_in(alice)
    for _ in range(10):
        assert client.post(CONNECT_PATH).status_code == 302
    states_before = pending_states(client)

    response = client.post(CONNECT_PATH)

    assert_limited(response, period=10 * 60)
    assert pending_states(client) == states_before
    assert logged_in(bob).post(CONNECT_PATH).status_code == 302


def test_limits_are_settings(shared_cache: str, alice: User, settings: Any) -> None:
    settings.RATE_LIMIT_PASSWORD_RESET_PER_ADDRESS = "1/d"
    client = Client()
    client.post(RESET, {"email": "alice@example.com"})

    response = client.post(RESET, {"email": "alice@example.com"})

    assert_limited(response, period=24 * 3600)
    settings.RATE_LIMIT_PASSWORD_RESET_PER_ADDRESS = None
    assert client.post(RESET, {"email": "alice@example.com"}).status_code == 302


def test_an_unreachable_redis_lets_people_sign_in_and_is_logged(
    alice: User, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    client = Client()

    with caplog.at_level(logging.ERROR, logger="jiraconnect.ratelimits"):
        response = client.post(LOGIN, {"username": "alice@example.com", "password": ALICE_PASSWORD})

    assert response.status_code == 302
    assert client.session[SESSION_KEY] == str(alice.pk)
    assert "the cache is unavailable" in caplog.text


# --- The client address ---------------------------------------------------------------


def addressed(remote: str, forwarded: str | None = None) -> Any:
    meta = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded
    return SimpleNamespace(META=meta)


@pytest.mark.parametrize(
    ("proxies", "remote", "forwarded", "expected"),
    [
        # No trusted proxy: a client's own X-Forwarded-For is never believed.
        (0, "192.0.2.1", "203.0.113.5", "192.0.2.1"),
        # One proxy: the entry it appended; whatever the client sent stands further left.
        (1, "10.0.0.2", "6.6.6.6, 203.0.113.5", "203.0.113.5"),
        (2, "10.0.0.3", "6.6.6.6, 203.0.113.5, 10.0.0.2", "203.0.113.5"),
        # Fewer entries than proxies, or garbage: the peer address.
        (2, "10.0.0.3", "203.0.113.5", "10.0.0.3"),
        (1, "10.0.0.2", "not-an-address", "10.0.0.2"),
        (1, "10.0.0.2", None, "10.0.0.2"),
        (1, "10.0.0.2", "2001:db8::7", "2001:db8::7"),
    ],
)
def test_client_ip_trusts_only_the_configured_number_of_proxies(
    settings: Any, proxies: int, remote: str, forwarded: str | None, expected: str
) -> None:
    from jiraconnect.ratelimits import client_ip

    settings.TRUSTED_PROXY_COUNT = proxies

    assert client_ip(addressed(remote, forwarded)) == expected


def test_spoofed_forwarded_for_does_not_escape_the_per_ip_limit(shared_cache: str, alice: User) -> None:
    for n in range(30):
        Client(REMOTE_ADDR="192.0.2.90", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}").post(
            LOGIN, {"username": f"stuffed{n}@example.com", "password": "leaked password 1"}
        )

    response = Client(REMOTE_ADDR="192.0.2.90", HTTP_X_FORWARDED_FOR="203.0.113.250").post(
        LOGIN, {"username": "alice@example.com", "password": ALICE_PASSWORD}
    )

    assert_limited(response, period=5 * 60)
