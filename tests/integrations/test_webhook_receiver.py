"""The webhook receiver: nothing stored unless signed with our client secret, each
delivery stored once, the signal sent once, no secret in the logs."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from django.conf import settings as django_settings
from django.db import connection as db_connection
from django.db import transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from accounts.models import User
from integrations.models import JiraConnection, JiraEvent, JiraWebhook
from integrations.signals import jira_event_received
from integrations.views import MAX_DELIVERY_BYTES
from monitoring import recorder
from monitoring.models import DailyCount, Kind
from tests.support.connections import ConnectionFactory
from tests.support.webhooks import (
    WEBHOOK_PATH,
    delivery,
    only_site,
    post_delivery,
    registered,
    token,
    unsigned_token,
    webhook_connection,
)


@pytest.fixture
def hooked(alice: User, make_connection: ConnectionFactory) -> JiraConnection:
    """Alice's connection with both webhooks (1001 assignee, 1002 reporter) registered."""
    connection = webhook_connection(make_connection, alice)
    registered(connection, expires_at=datetime.now(tz=UTC) + timedelta(days=25))
    return connection


@pytest.fixture
def received() -> Iterator[list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []

    def on_event(sender: Any, **kwargs: Any) -> None:
        calls.append(kwargs)

    jira_event_received.connect(on_event, dispatch_uid="test-receiver")
    yield calls
    jira_event_received.disconnect(dispatch_uid="test-receiver")


def test_a_signed_delivery_is_stored_counted_and_announced(
    client: Client, hooked: JiraConnection, received: list[dict[str, Any]]
) -> None:
    response = post_delivery(client, delivery([1001]), identifier="abc-123", HTTP_X_ATLASSIAN_WEBHOOK_FLOW="Primary")

    assert response.status_code == 200
    event = JiraEvent.objects.get()
    assert (event.connection_id, event.site_id) == (hooked.pk, only_site(hooked).pk)
    assert (event.identifier, event.event_type, event.issue_key) == ("abc-123", "jira:issue_updated", "ACME-7")
    assert (event.issue_summary, event.actor_name) == ("Fix the login redirect", "Grace Hopper")
    assert event.occurred_at == datetime(2026, 1, 1, tzinfo=UTC)
    row = JiraWebhook.objects.get(webhook_id=1001)
    assert row.delivery_count == 1
    assert row.last_delivery_at == event.created_at
    [call] = received
    assert call["connection"].pk == hooked.pk
    assert {"access_token", "refresh_token"} <= call["connection"].get_deferred_fields()
    assert call["site"].pk == only_site(hooked).pk
    assert call["event"].issue_key == "ACME-7"
    assert call["event"].payload["matchedWebhookIds"] == [1001]


def test_a_retry_of_a_stored_delivery_gets_200_and_stores_nothing_new(
    client: Client, hooked: JiraConnection, received: list[dict[str, Any]]
) -> None:
    first = post_delivery(client, delivery([1001]), identifier="same-id")
    retry = post_delivery(client, delivery([1001]), identifier="same-id", HTTP_X_ATLASSIAN_WEBHOOK_RETRY="1")

    assert (first.status_code, retry.status_code) == (200, 200)
    assert JiraEvent.objects.count() == 1
    assert len(received) == 1
    assert JiraWebhook.objects.get(webhook_id=1001).delivery_count == 1


def statements_of_one_delivery(client: Client) -> list[str]:
    with CaptureQueriesContext(db_connection) as captured:
        response = post_delivery(client, delivery([1001, 1002]))
    assert response.status_code == 200
    assert "integrations_jiraconnection" not in captured.captured_queries[0]["sql"]
    for query in captured.captured_queries:
        assert '"access_token"' not in query["sql"]
        assert '"refresh_token"' not in query["sql"]
    return [query["sql"].split(" ", 1)[0] for query in captured.captured_queries]


def test_with_nobody_listening_a_delivery_reads_only_webhook_rows_and_writes_event_and_count_together(
    client: Client, hooked: JiraConnection
) -> None:
    from integrations.myjira.receivers import forget_cached_issues

    jira_event_received.disconnect(dispatch_uid="myjira-issues-cache-forget")
    try:
        statements = statements_of_one_delivery(client)
    finally:
        jira_event_received.connect(forget_cached_issues, dispatch_uid="myjira-issues-cache-forget")

    # One read; the connection's row is not built for nobody.
    assert statements == ["SELECT", "SAVEPOINT", "INSERT", "UPDATE", "RELEASE"]
    assert set(JiraWebhook.objects.values_list("delivery_count", flat=True)) == {1}


def test_listeners_get_the_site_and_connection_from_one_more_read_without_tokens(
    client: Client, hooked: JiraConnection
) -> None:
    statements = statements_of_one_delivery(client)

    # Then My Jira's listener drops the user's cached issues (the cache is the database's).
    assert statements[:6] == ["SELECT", "SAVEPOINT", "INSERT", "UPDATE", "RELEASE", "SELECT"]


def test_a_delivery_matching_both_webhooks_of_a_site_is_one_event(client: Client, hooked: JiraConnection) -> None:
    post_delivery(client, delivery([1001, 1002]))

    assert JiraEvent.objects.count() == 1
    assert set(JiraWebhook.objects.values_list("delivery_count", flat=True)) == {1}


def test_comment_events_name_the_comments_author(client: Client, hooked: JiraConnection) -> None:
    body = delivery([1001], event="comment_created")
    body["comment"] = {"author": {"displayName": "Alan Turing", "accountId": "557058:alan"}, "body": "hello"}

    post_delivery(client, body)

    assert JiraEvent.objects.get().actor_name == "Alan Turing"


def forged(kind: str) -> str:
    now = datetime.now(tz=UTC)
    if kind == "wrong key":
        return f"Bearer {token(key='not-our-client-secret-at-all-000000')}"
    if kind == "expired":
        return f"Bearer {token(claims={'exp': int((now - timedelta(minutes=1)).timestamp())})}"
    if kind == "alg none":
        return f"Bearer {unsigned_token()}"
    if kind == "HS512 with our key":
        return f"Bearer {token(algorithm='HS512')}"
    if kind == "not yet valid":
        return f"Bearer {token(claims={'nbf': int((now + timedelta(minutes=5)).timestamp())})}"
    if kind == "tampered payload":
        header, _payload, signature = token().split(".")
        other = jwt.encode({"iss": "evil"}, "x" * 32, algorithm="HS256").split(".")[1]
        return f"Bearer {header}.{other}.{signature}"
    if kind == "basic scheme":
        return f"Basic {token()}"
    if kind == "empty bearer":
        return "Bearer "
    if kind == "garbage":
        return "Bearer not.a.jwt"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "wrong key",
        "expired",
        "alg none",
        "HS512 with our key",
        "not yet valid",
        "tampered payload",
        "basic scheme",
        "empty bearer",
        "garbage",
    ],
)
def test_an_unverifiable_delivery_gets_401_and_stores_nothing(
    client: Client, hooked: JiraConnection, received: list[dict[str, Any]], kind: str
) -> None:
    response = post_delivery(client, delivery([1001]), authorization=forged(kind))

    assert response.status_code == 401
    assert not JiraEvent.objects.exists()
    assert JiraWebhook.objects.get(webhook_id=1001).delivery_count == 0
    assert received == []


def test_a_delivery_without_authorization_gets_401(client: Client, hooked: JiraConnection) -> None:
    response = post_delivery(client, delivery([1001]), signed=False)

    assert response.status_code == 401
    assert not JiraEvent.objects.exists()


def test_a_token_without_exp_is_accepted_atlassian_documents_no_claims(client: Client, hooked: JiraConnection) -> None:
    bare = jwt.encode({}, key=django_settings.ATLASSIAN_CLIENT_SECRET, algorithm="HS256")

    response = post_delivery(client, delivery([1001]), authorization=f"Bearer {bare}")

    assert response.status_code == 200
    assert JiraEvent.objects.count() == 1


def test_an_oversized_body_gets_413_before_anything_else(client: Client, hooked: JiraConnection) -> None:
    body = delivery([1001], summary="x" * MAX_DELIVERY_BYTES)

    response = post_delivery(client, body)

    assert response.status_code == 413
    assert not JiraEvent.objects.exists()


@pytest.mark.parametrize(
    ("body", "identifier"),
    [
        (b"not json", "ok-1"),
        (b"[1, 2]", "ok-2"),
        (json.dumps({"matchedWebhookIds": [1001]}).encode(), "ok-3"),  # no webhookEvent
        (json.dumps(delivery([1001])).encode(), "bad id with spaces\u00e9"),
        (json.dumps(delivery([1001])).encode(), "x" * 200),
    ],
)
def test_a_signed_but_malformed_delivery_gets_400_and_stores_nothing(
    client: Client, hooked: JiraConnection, body: bytes, identifier: str
) -> None:
    response = post_delivery(client, body, identifier=identifier)

    assert response.status_code == 400
    assert not JiraEvent.objects.exists()


def test_a_delivery_for_a_webhook_we_no_longer_track_gets_200_and_stores_nothing(
    client: Client, hooked: JiraConnection
) -> None:
    response = post_delivery(client, delivery([424242]))

    assert response.status_code == 200
    assert not JiraEvent.objects.exists()


def test_the_same_webhook_id_on_two_sites_is_told_apart_by_the_issues_site(
    client: Client, alice: User, bob: User, make_connection: ConnectionFactory
) -> None:
    later = datetime.now(tz=UTC) + timedelta(days=25)
    acme = webhook_connection(make_connection, alice)
    registered(acme, expires_at=later)
    globex = webhook_connection(
        make_connection, bob, sites=[("cloud-globex", "https://globex.atlassian.net", "Globex")]
    )
    registered(globex, expires_at=later)  # the same ids, 1001 and 1002, on another site

    post_delivery(client, delivery([1001], site_url="https://globex.atlassian.net"))

    assert list(JiraEvent.objects.values_list("connection_id", flat=True)) == [globex.pk]


def test_jira_needs_no_csrf_token(hooked: JiraConnection) -> None:
    strict = Client(enforce_csrf_checks=True)

    assert post_delivery(strict, delivery([1001])).status_code == 200
    assert JiraEvent.objects.count() == 1


def test_only_post_is_accepted(client: Client, hooked: JiraConnection) -> None:
    assert client.get(WEBHOOK_PATH).status_code == 405


def test_with_webhooks_off_the_receiver_is_not_there(client: Client, hooked: JiraConnection, settings: Any) -> None:
    settings.ATLASSIAN_WEBHOOKS = False

    assert post_delivery(client, delivery([1001])).status_code == 404
    assert not JiraEvent.objects.exists()


def test_a_failing_signal_receiver_does_not_fail_the_delivery(
    client: Client, hooked: JiraConnection, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    jira_event_received.connect(broken, dispatch_uid="broken")
    try:
        response = post_delivery(client, delivery([1001]))
    finally:
        jira_event_received.disconnect(dispatch_uid="broken")

    assert response.status_code == 200
    assert JiraEvent.objects.count() == 1
    assert "RuntimeError" in caplog.text


def test_neither_the_jwt_nor_the_client_secret_reaches_the_logs(
    client: Client, hooked: JiraConnection, caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    good = token()
    bad = token(key="wrong-key-wrong-key-wrong-key-00000")

    post_delivery(client, delivery([1001]), authorization=f"Bearer {good}")
    post_delivery(client, delivery([1001]), authorization=f"Bearer {bad}")
    post_delivery(client, b"{", authorization=f"Bearer {good}")

    assert "Jira delivery refused (401)" in caplog.text
    for secret in (good, bad, good.split(".")[2], settings.ATLASSIAN_CLIENT_SECRET):
        assert secret not in caplog.text


# --- 1,000 generated deliveries ----------------------------------------------------------

_text = st.text(max_size=60)
_authorization = st.one_of(
    st.none(),
    _text,
    _text.map(lambda t: f"Bearer {t}"),
    st.sampled_from(["wrong key", "expired", "alg none", "HS512 with our key", "tampered payload", "garbage"]).map(
        lambda kind: ("forged", kind)
    ),
    st.dictionaries(st.sampled_from(["exp", "iss", "aud", "nbf", "sub", "qsh"]), st.integers() | _text, max_size=3).map(
        lambda claims: ("signed", claims)
    ),
)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)
_body = st.one_of(
    st.binary(max_size=300),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(
        lambda ids, event, key, extra: json.dumps(
            {**delivery(ids, event=event, key=key), **extra}, default=str
        ).encode(),
        st.lists(st.integers(min_value=-5, max_value=2**64) | st.sampled_from([1001, 1002]), max_size=3),
        st.sampled_from(["jira:issue_updated", "comment_created", ""]) | _text,
        _text,
        st.dictionaries(_text, _json_values, max_size=2),
    ),
)


def _authorization_header(value: Any) -> str | None:
    if isinstance(value, tuple) and value[0] == "forged":
        return forged(value[1])
    if isinstance(value, tuple):
        try:
            return f"Bearer {token(claims=value[1])}"
        except (TypeError, ValueError):
            return None
    return value if value is None or value.isprintable() else None


def _verifies(header: str | None) -> bool:
    if not header or not header.startswith("Bearer "):
        return False
    try:
        jwt.decode(
            header[7:],
            django_settings.ATLASSIAN_CLIENT_SECRET,
            algorithms=["HS256"],
            options={
                "verify_aud": False,
                "verify_iss": False,
                "verify_sub": False,
                "verify_jti": False,
                "verify_iat": False,
            },
            leeway=5,
        )
    except Exception:
        return False
    return True


def test_1000_generated_deliveries_never_error_and_store_only_when_signed(
    hooked: JiraConnection, received: list[dict[str, Any]]
) -> None:
    client = Client()
    outcomes: dict[int, int] = {}

    @settings(
        max_examples=1000,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        authorization=_authorization,
        body=_body,
        identifier=st.none() | _text | st.uuids().map(str),
        retry=st.none() | st.sampled_from(["1", "2", "x"]),
    )
    @example(authorization=("signed", {}), body=json.dumps(delivery([1001])).encode(), identifier="u-1", retry=None)
    def check(authorization: Any, body: bytes, identifier: str | None, retry: str | None) -> None:
        header = _authorization_header(authorization)
        headers: dict[str, str] = {}
        if header is not None:
            headers["HTTP_AUTHORIZATION"] = header
        if identifier is not None and identifier.isprintable():
            headers["HTTP_X_ATLASSIAN_WEBHOOK_IDENTIFIER"] = identifier
        if retry is not None:
            headers["HTTP_X_ATLASSIAN_WEBHOOK_RETRY"] = retry
        before = JiraEvent.objects.count()
        signals_before = len(received)
        with transaction.atomic():
            sid = transaction.savepoint()
            response = client.post(WEBHOOK_PATH, data=body, content_type="application/json", **headers)
            stored = JiraEvent.objects.count() - before
            transaction.savepoint_rollback(sid)
        outcomes[response.status_code] = outcomes.get(response.status_code, 0) + 1
        assert response.status_code < 500
        assert response.status_code in (200, 400, 401)
        if stored:
            assert _verifies(header), header
            assert response.status_code == 200
            assert len(received) == signals_before + 1
        else:
            assert len(received) == signals_before

    check()
    assert sum(outcomes.values()) >= 1000
    # The generator reached every branch: refused, malformed and accepted.
    assert {200, 400, 401} <= set(outcomes), outcomes


def test_deliveries_are_counted_in_the_daily_aggregates_by_outcome(
    client: Client, hooked: JiraConnection, received: list[dict[str, Any]]
) -> None:
    post_delivery(client, delivery([1001]), identifier="count-1")
    post_delivery(client, delivery([1001]), identifier="count-1")  # Jira's retry
    post_delivery(client, delivery([999_999]), identifier="count-2")  # a webhook we never registered
    client.post(WEBHOOK_PATH, data=b"{}", content_type="application/json")  # unsigned

    recorder.flush()

    rows = DailyCount.objects.filter(kind=Kind.DELIVERY).exclude(day=recorder.LIFETIME)
    assert {(r.outcome, r.reason): r.value for r in rows} == {
        ("stored", ""): 1,
        ("duplicate", ""): 1,
        ("unmatched", ""): 1,
        ("refused", "401"): 1,
    }
