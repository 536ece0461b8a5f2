"""Connections as the tests make and inspect them: the factory behind the `make_connection`
fixture, fresh reads, the audit trail, and the stored ciphertext."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from cryptography.fernet import Fernet
from django.db import connection as db
from django.utils import timezone

from accounts.models import User
from integrations.models import ConnectionEvent, JiraConnection, JiraSite
from tests.support.atlassian import SCOPES

ConnectionFactory = Callable[..., JiraConnection]
TABLE = JiraConnection._meta.db_table
# A valid Fernet key that encrypted nothing here: with it alone, every stored token is unreadable.
OTHER_FERNET_KEY = "b3RoZXIta2V5LW90aGVyLWtleS1vdGhlci1rZXktMDA="


def connection_factory() -> ConnectionFactory:
    """make_connection(user, sites=[(cloud_id, url, name)], **fields): the nth connection
    gets account n, tokens "access-token-n-secret" / "refresh-token-n-secret" valid for an
    hour, and one site unless told otherwise."""
    counter = {"n": 0}

    def factory(user: User, **overrides: Any) -> JiraConnection:
        counter["n"] += 1
        n = counter["n"]
        now = timezone.now()
        sites = overrides.pop("sites", [("cloud-" + str(n), f"https://site{n}.atlassian.net", f"Site {n}")])
        values: dict[str, Any] = {
            "account_id": f"557058:account-{n}",
            "account_name": f"Account {n}",
            "account_email": f"account{n}@example.com",
            "access_token": f"access-token-{n}-secret",
            "refresh_token": f"refresh-token-{n}-secret",
            "scopes": SCOPES.split(),
            "access_token_expires_at": now + timedelta(hours=1),
            "tokens_issued_at": now,
            "first_consented_at": now,
            # In daily use unless a test says otherwise: the run keeps such connections warm.
            "last_used_at": now,
        }
        values.update(overrides)
        connection = JiraConnection.objects.create(user=user, **values)
        for cloud_id, url, name in sites:
            JiraSite.objects.create(connection=connection, cloud_id=cloud_id, url=url, name=name)
        return connection

    return factory


def fresh(connection: JiraConnection) -> JiraConnection:
    """The row as stored now (tokens decrypted anew)."""
    return JiraConnection.objects.get(pk=connection.pk)


def event_kinds(connection: JiraConnection) -> list[str]:
    return list(
        ConnectionEvent.objects.filter(connection_id=connection.pk).order_by("id").values_list("kind", flat=True)
    )


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


def tokens_of(*connections: JiraConnection) -> list[str | None]:
    """Every token the connections hold (None where one is missing: a leak check fails on it)."""
    return [token for connection in connections for token in (connection.access_token, connection.refresh_token)]
