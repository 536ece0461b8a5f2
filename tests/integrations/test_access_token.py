"""connection_access_token, ConnectionTokens and jira_for: the API-side of refresh."""

from __future__ import annotations

from datetime import timedelta

import pytest
import responses
from django.test import override_settings

from accounts.models import User
from integrations.lifecycle.access import (
    CLAIM_POLL_SECONDS,
    CLAIM_WAIT,
    ConnectionTokens,
    ConnectionUnusableError,
    connection_access_token,
    jira_for,
)
from integrations.models import ConnectionStatus, JiraConnection, JiraSite
from tests.support.atlassian import TOKEN_URL, token_calls, token_reply
from tests.support.clock import FakeClock
from tests.support.connections import OTHER_FERNET_KEY, ConnectionFactory, fresh
from tests.support.secrets import assert_no_secrets

pytestmark = pytest.mark.django_db


def expiring_in(frozen: FakeClock, **delta: float) -> dict[str, object]:
    return {"access_token": "old-access-secret", "access_token_expires_at": frozen.now() + timedelta(**delta)}


def access_token(connection: JiraConnection, rejected: str | None = None) -> str:
    return connection_access_token(connection_id=connection.pk, rejected=rejected)


@pytest.mark.parametrize("seconds", [3600, 60, 1])
def test_token_before_its_stored_expiry_is_returned_without_a_refresh(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock, seconds: int
) -> None:
    # The stored expiry already stands atlassian.EXPIRY_MARGIN before Atlassian's: the
    # one margin. A second one here would renew tokens two minutes early.
    connection = make_connection(alice, **expiring_in(frozen, seconds=seconds))

    assert access_token(connection) == "old-access-secret"
    assert len(mocked.calls) == 0


@pytest.mark.parametrize("seconds", [0, -1, -600])
def test_token_past_its_stored_expiry_is_refreshed_first(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock, seconds: int
) -> None:
    connection = make_connection(alice, **expiring_in(frozen, seconds=seconds))
    mocked.post(TOKEN_URL, json=token_reply(1))

    assert access_token(connection) == "new-access-1-secret"
    assert len(token_calls(mocked)) == 1
    assert fresh(connection).version == 2


def test_token_from_a_reply_with_a_garbled_lifetime_is_used_not_refreshed_forever(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    connection = make_connection(alice, **expiring_in(frozen, seconds=0))
    # expires_in "soon" is read as 0: the fresh token is stored as already expired.
    mocked.post(TOKEN_URL, json=token_reply(1, expires_in="soon"))
    mocked.post(TOKEN_URL, json=token_reply(2, expires_in="soon"))

    assert access_token(connection) == "new-access-1-secret"
    assert len(token_calls(mocked)) == 1


def test_rejected_token_is_refreshed_though_not_expiring(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    connection = make_connection(alice, **expiring_in(frozen, minutes=50))
    mocked.post(TOKEN_URL, json=token_reply(1))

    assert access_token(connection, rejected="old-access-secret") == "new-access-1-secret"
    assert len(token_calls(mocked)) == 1


def test_rejected_token_already_replaced_by_another_worker_is_not_refreshed_again(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    connection = make_connection(alice, **expiring_in(frozen, minutes=50))

    assert access_token(connection, rejected="an-older-access-token") == "old-access-secret"
    assert len(mocked.calls) == 0


@pytest.mark.parametrize("rejected", [None, "old-access-secret"], ids=["expired", "rejected"])
def test_no_token_call_while_the_connection_backs_off_from_a_server_error(
    alice: User,
    make_connection: ConnectionFactory,
    mocked: responses.RequestsMock,
    frozen: FakeClock,
    rejected: str | None,
) -> None:
    connection = make_connection(
        alice,
        status=ConnectionStatus.REFRESH_FAILING,
        status_reason="transient",
        next_attempt_at=frozen.now() + timedelta(minutes=10),
        **expiring_in(frozen, seconds=-10),
    )

    with pytest.raises(ConnectionUnusableError) as refused:
        access_token(connection, rejected=rejected)

    assert not refused.value.permanent
    assert "next try is at" in refused.value.message
    assert len(mocked.calls) == 0
    frozen.advance(minutes=10)
    mocked.post(TOKEN_URL, json=token_reply(1))
    assert access_token(connection, rejected=rejected) == "new-access-1-secret"


def rate_limited(make_connection: ConnectionFactory, user: User, frozen: FakeClock) -> JiraConnection:
    return make_connection(
        user,
        status=ConnectionStatus.REFRESH_FAILING,
        status_reason="rate_limited",
        next_attempt_at=frozen.now() + timedelta(seconds=90),
        **expiring_in(frozen, seconds=-10),
    )


@pytest.mark.parametrize("rejected", [None, "old-access-secret"], ids=["expired", "rejected"])
def test_no_token_call_before_atlassians_retry_after_has_passed(
    alice: User,
    make_connection: ConnectionFactory,
    mocked: responses.RequestsMock,
    frozen: FakeClock,
    rejected: str | None,
) -> None:
    connection = rate_limited(make_connection, alice, frozen)

    with pytest.raises(ConnectionUnusableError) as refused:
        access_token(connection, rejected=rejected)

    assert not refused.value.permanent
    assert f"try again after {frozen.now() + timedelta(seconds=90):%H:%M:%S} UTC" in str(refused.value)
    assert len(mocked.calls) == 0
    assert fresh(connection).failure_count == connection.failure_count


def test_token_is_refreshed_once_atlassians_retry_after_has_passed(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    connection = rate_limited(make_connection, alice, frozen)
    mocked.post(TOKEN_URL, json=token_reply(1))
    frozen.advance(seconds=91)

    assert access_token(connection) == "new-access-1-secret"


def test_waits_for_another_workers_refresh_and_uses_its_token(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    connection = make_connection(
        alice,
        claim_id="6f1c3a52-0000-4000-8000-000000000001",
        claimed_until=frozen.now() + timedelta(minutes=1),
        **expiring_in(frozen, seconds=-10),
    )

    def other_worker_finishes() -> None:
        if len(frozen.sleeps) == 3:
            JiraConnection.objects.filter(pk=connection.pk).update(
                access_token="their-access-secret",
                access_token_expires_at=frozen.now() + timedelta(hours=1),
                claim_id=None,
                claimed_until=None,
            )

    frozen.on_sleep.append(other_worker_finishes)

    assert access_token(connection) == "their-access-secret"
    assert frozen.sleeps == [CLAIM_POLL_SECONDS] * 3
    assert len(mocked.calls) == 0


def test_gives_up_when_another_worker_holds_the_claim_too_long(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    connection = make_connection(
        alice,
        claim_id="6f1c3a52-0000-4000-8000-000000000001",
        claimed_until=frozen.now() + timedelta(minutes=2),
        **expiring_in(frozen, seconds=-10),
    )

    with pytest.raises(ConnectionUnusableError, match="busy") as caught:
        access_token(connection)

    assert caught.value.permanent is False
    assert sum(frozen.sleeps) == pytest.approx(CLAIM_WAIT.total_seconds())
    assert len(mocked.calls) == 0


def test_transient_refresh_failure_is_a_temporary_error(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    connection = make_connection(alice, **expiring_in(frozen, seconds=-10))
    mocked.post(TOKEN_URL, status=503, body="down")

    with pytest.raises(ConnectionUnusableError, match="not reachable") as caught:
        access_token(connection)

    assert caught.value.permanent is False
    assert fresh(connection).status == ConnectionStatus.REFRESH_FAILING


def test_dead_grant_makes_the_connection_permanently_unusable(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    connection = make_connection(alice, **expiring_in(frozen, seconds=-10))
    mocked.post(TOKEN_URL, status=403, json={"error": "invalid_grant"})

    with pytest.raises(ConnectionUnusableError) as caught:
        access_token(connection)

    assert caught.value.permanent is True
    assert fresh(connection).status == ConnectionStatus.NEEDS_RECONNECT


def test_needs_reconnect_connection_raises_without_a_token_call(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    connection = make_connection(
        alice, status=ConnectionStatus.NEEDS_RECONNECT, status_message="Reconnect, please.", **expiring_in(frozen)
    )

    with pytest.raises(ConnectionUnusableError, match="Reconnect, please") as caught:
        access_token(connection)

    assert caught.value.permanent is True
    assert len(mocked.calls) == 0


def test_deleted_connection_raises_permanently(mocked: responses.RequestsMock, db: None) -> None:
    with pytest.raises(ConnectionUnusableError, match="no longer exists") as caught:
        connection_access_token(connection_id=424_242)
    assert caught.value.permanent is True


def test_unreadable_tokens_mark_needs_reconnect(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    connection = make_connection(alice, **expiring_in(frozen, minutes=50))
    with (
        override_settings(FERNET_KEYS=[OTHER_FERNET_KEY]),
        pytest.raises(ConnectionUnusableError) as caught,
    ):
        access_token(connection)

    assert caught.value.permanent is True
    assert fresh(connection).status_reason == "token_unreadable"
    assert len(mocked.calls) == 0


def test_connection_tokens_adapter_never_shows_a_token(
    alice: User, make_connection: ConnectionFactory, frozen: FakeClock
) -> None:
    connection = make_connection(alice, **expiring_in(frozen, minutes=50))
    tokens = ConnectionTokens(connection_id=connection.pk)

    assert tokens.access_token() == "old-access-secret"
    assert_no_secrets(repr(tokens), "secret")


def test_jira_for_yields_enabled_sites_of_usable_connections_of_that_user_only(
    alice: User, bob: User, make_connection: ConnectionFactory
) -> None:
    usable = make_connection(
        alice,
        sites=[("cloud-a", "https://a.atlassian.net", "A"), ("cloud-b", "https://b.atlassian.net", "B")],
    )
    JiraSite.objects.filter(connection=usable, cloud_id="cloud-b").update(enabled=False)
    make_connection(alice, status=ConnectionStatus.NEEDS_RECONNECT)
    failing = make_connection(alice, status=ConnectionStatus.REFRESH_FAILING)
    make_connection(bob)

    sites = list(jira_for(alice))

    assert [(s.connection.pk, s.site.cloud_id) for s in sites] == [
        (usable.pk, "cloud-a"),
        (failing.pk, failing.sites.get().cloud_id),
    ]
    assert sites[0].client.cloud_id == "cloud-a"
    assert_no_secrets(repr(sites[0].client), "secret")
