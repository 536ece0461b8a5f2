"""TokenField: Fernet at rest, keys read from settings on every use, never raises on read."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import FieldError
from django.db import connection as db

from accounts.models import User
from integrations.models import JiraConnection
from tests.conftest import ConnectionFactory

TABLE = JiraConnection._meta.db_table


def new_key() -> str:
    return Fernet.generate_key().decode()


def raw_token(pk: int, column: str) -> bytes | None:
    """The stored ciphertext, bypassing TokenField (bytea is a memoryview on PostgreSQL)."""
    with db.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {TABLE} WHERE id = %s", [pk])  # noqa: S608
        (value,) = cursor.fetchone()
    return None if value is None else bytes(value)


def write_raw_token(pk: int, column: str, value: bytes) -> None:
    with db.cursor() as cursor:
        cursor.execute(f"UPDATE {TABLE} SET {column} = %s WHERE id = %s", [value, pk])  # noqa: S608


def tamper(pk: int, column: str) -> bytes:
    """Flip one byte in the middle of the stored ciphertext; returns the damaged bytes."""
    raw = raw_token(pk, column)
    assert raw is not None
    middle = len(raw) // 2
    damaged = raw[:middle] + bytes([raw[middle] ^ 0x01]) + raw[middle + 1 :]
    write_raw_token(pk, column, damaged)
    return damaged


def reload(connection: JiraConnection) -> JiraConnection:
    return JiraConnection.objects.get(pk=connection.pk)


@pytest.fixture
def old_key(settings: Any) -> str:
    key = new_key()
    settings.FERNET_KEYS = [key]
    return key


def test_token_round_trips_and_raw_column_holds_only_ciphertext(
    alice: User, make_connection: ConnectionFactory, old_key: str
) -> None:
    connection = make_connection(alice)

    stored = reload(connection)
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
    assert reload(connection).access_token is None
    assert reload(connection).refresh_token == "refresh-token-1-secret"


def test_tampered_ciphertext_reads_as_none_instead_of_raising(
    alice: User, make_connection: ConnectionFactory, old_key: str
) -> None:
    connection = make_connection(alice)
    tamper(connection.pk, "refresh_token")

    stored = reload(connection)
    assert stored.refresh_token is None
    assert stored.access_token == "access-token-1-secret"


def test_token_under_a_removed_key_reads_as_none_and_recovers_when_the_key_returns(
    alice: User, make_connection: ConnectionFactory, old_key: str, settings: Any
) -> None:
    connection = make_connection(alice)
    before = raw_token(connection.pk, "access_token")

    settings.FERNET_KEYS = [new_key()]
    assert reload(connection).access_token is None

    settings.FERNET_KEYS = [new_key(), old_key]
    assert reload(connection).access_token == "access-token-1-secret"
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
    stored = reload(connection)
    assert (stored.access_token, stored.refresh_token) == ("rewritten-access-secret", "refresh-token-1-secret")


def test_tokens_cannot_be_looked_up_by_value(alice: User, make_connection: ConnectionFactory, old_key: str) -> None:
    make_connection(alice)

    with pytest.raises(FieldError):
        JiraConnection.objects.filter(access_token="access-token-1-secret").count()
    with pytest.raises(FieldError):
        JiraConnection.objects.filter(refresh_token__contains="secret").count()


def test_str_and_repr_show_no_token(alice: User, make_connection: ConnectionFactory, old_key: str) -> None:
    connection = reload(make_connection(alice))

    for text in (str(connection), repr(connection)):
        assert "secret" not in text
        assert connection.pk is not None
        assert str(connection.pk) in text
