"""TokenField: Fernet at rest, keys read from settings on every use, never raises on read."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import FieldError

from accounts.models import User
from integrations.models import JiraConnection
from tests.support.connections import ConnectionFactory, fresh, new_key, raw_token, tamper
from tests.support.secrets import assert_no_secrets


@pytest.fixture
def old_key(settings: Any) -> str:
    key = new_key()
    settings.FERNET_KEYS = [key]
    return key


def test_token_round_trips_and_raw_column_holds_only_ciphertext(
    alice: User, make_connection: ConnectionFactory, old_key: str
) -> None:
    connection = make_connection(alice)

    stored = fresh(connection)
    assert stored.access_token == "access-token-1-secret"
    assert stored.refresh_token == "refresh-token-1-secret"
    for column, plaintext in (("access_token", b"access-token-1-secret"), ("refresh_token", b"refresh-token-1-secret")):
        raw = raw_token(connection.pk, column)
        assert raw is not None
        assert b"secret" not in raw
        assert b"token" not in raw
        assert Fernet(old_key).decrypt(raw) == plaintext


def test_none_is_stored_as_null_and_reads_back_as_none(
    alice: User, make_connection: ConnectionFactory, old_key: str
) -> None:
    connection = make_connection(alice, access_token=None)

    assert raw_token(connection.pk, "access_token") is None
    assert fresh(connection).access_token is None
    assert fresh(connection).refresh_token == "refresh-token-1-secret"


def test_tampered_ciphertext_reads_as_none_instead_of_raising(
    alice: User, make_connection: ConnectionFactory, old_key: str
) -> None:
    connection = make_connection(alice)
    tamper(connection.pk, "refresh_token")

    stored = fresh(connection)
    assert stored.refresh_token is None
    assert stored.access_token == "access-token-1-secret"


def test_token_under_a_removed_key_reads_as_none_and_recovers_when_the_key_returns(
    alice: User, make_connection: ConnectionFactory, old_key: str, settings: Any
) -> None:
    connection = make_connection(alice)
    before = raw_token(connection.pk, "access_token")

    settings.FERNET_KEYS = [new_key()]
    assert fresh(connection).access_token is None

    settings.FERNET_KEYS = [new_key(), old_key]
    assert fresh(connection).access_token == "access-token-1-secret"
    assert raw_token(connection.pk, "access_token") == before


def test_writes_use_the_first_key_while_older_keys_still_decrypt(
    alice: User, make_connection: ConnectionFactory, old_key: str, settings: Any
) -> None:
    connection = make_connection(alice)
    newest = new_key()
    settings.FERNET_KEYS = [newest, old_key]

    JiraConnection.objects.filter(pk=connection.pk).update(access_token="rewritten-access-secret")

    access = raw_token(connection.pk, "access_token")
    refresh = raw_token(connection.pk, "refresh_token")
    assert access is not None
    assert refresh is not None
    assert Fernet(newest).decrypt(access) == b"rewritten-access-secret"
    assert Fernet(old_key).decrypt(refresh) == b"refresh-token-1-secret"
    stored = fresh(connection)
    assert (stored.access_token, stored.refresh_token) == ("rewritten-access-secret", "refresh-token-1-secret")


def test_tokens_cannot_be_looked_up_by_value(alice: User, make_connection: ConnectionFactory, old_key: str) -> None:
    make_connection(alice)

    with pytest.raises(FieldError):
        JiraConnection.objects.filter(access_token="access-token-1-secret").count()
    with pytest.raises(FieldError):
        JiraConnection.objects.filter(refresh_token__contains="secret").count()


def test_str_and_repr_show_no_token(alice: User, make_connection: ConnectionFactory, old_key: str) -> None:
    connection = fresh(make_connection(alice))

    for text in (str(connection), repr(connection)):
        assert_no_secrets(text, connection.access_token, connection.refresh_token)
        assert connection.pk is not None
        assert str(connection.pk) in text
