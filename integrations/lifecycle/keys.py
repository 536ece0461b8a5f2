"""Re-encrypt every stored token with the newest key in settings.FERNET_KEYS.

Key rotation, like SECRET_KEY_FALLBACKS: put the new key first in FERNET_KEYS (keep the
old one after it), deploy everywhere, run `rotate_token_keys`, then drop the old key.

The raw ciphertext is read and written with SQL, not through TokenField: the field
decrypts on read and re-encrypts on write, and reads an unreadable value as None,
which must never be written back over the only copy of a token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import connection as db
from django.db import transaction
from django.db.models import Field

from integrations.fields import current_fernet
from integrations.lifecycle.events import event_unsaved
from integrations.lifecycle.status import connection_mark_unreadable
from integrations.models import ConnectionEvent, EventKind, JiraConnection

logger = logging.getLogger(__name__)

TOKEN_COLUMNS = ("access_token", "refresh_token")


@dataclass
class RotationReport:
    scanned: int = 0
    rotated: int = 0
    current: int = 0
    unreadable: int = 0
    skipped: int = 0
    dry_run: bool = False


@dataclass(frozen=True)
class _Row:
    pk: int
    user_id: int
    account_id: str
    version: int
    tokens: dict[str, bytes | None]


def _raw(value: Any) -> bytes | None:
    # bytea comes back as memoryview on PostgreSQL, BLOB as bytes on SQLite.
    return None if value is None else bytes(value)


def _table() -> str:
    return db.ops.quote_name(JiraConnection._meta.db_table)


def _column(name: str) -> str:
    field = JiraConnection._meta.get_field(name)
    assert isinstance(field, Field)
    assert field.column
    return db.ops.quote_name(field.column)


def _batch(*, after_pk: int, size: int) -> list[_Row]:
    columns = ", ".join(_column(name) for name in ("id", "user", "account_id", "version", *TOKEN_COLUMNS))
    sql = f"SELECT {columns} FROM {_table()} WHERE {_column('id')} > %s ORDER BY {_column('id')} LIMIT %s"  # noqa: S608
    with db.cursor() as cursor:
        cursor.execute(sql, [after_pk, size])
        rows = cursor.fetchall()
    return [
        _Row(
            pk=pk,
            user_id=user_id,
            account_id=account_id,
            version=version,
            tokens={name: _raw(value) for name, value in zip(TOKEN_COLUMNS, tokens, strict=True)},
        )
        for pk, user_id, account_id, version, *tokens in rows
    ]


class _Unreadable(Exception):
    pass


def _reencrypted(row: _Row, *, primary: Fernet, keys: MultiFernet) -> dict[str, bytes]:
    """The columns of `row` that need the new key, re-encrypted. Raises _Unreadable."""
    changed: dict[str, bytes] = {}
    for name, token in row.tokens.items():
        if token is None:
            continue
        try:
            primary.decrypt(token)
            continue
        except InvalidToken:
            pass
        try:
            changed[name] = keys.rotate(token)
        except InvalidToken:
            raise _Unreadable(name) from None
    return changed


def _write(row: _Row, changed: dict[str, bytes]) -> bool:
    """Compare-and-swap on the version AND the exact ciphertext read: a refresh or a
    reconnect that wrote meanwhile wins, and this row is counted as skipped. The
    version is not bumped: the plaintext is unchanged, and bumping it would make a
    refresh in flight lose its CAS and with it Atlassian's freshly rotated token."""
    assignments = ", ".join(f"{_column(name)} = %s" for name in changed)
    conditions = [f"{_column('id')} = %s", f"{_column('version')} = %s"]
    params: list[Any] = [*changed.values(), row.pk, row.version]
    for name, token in row.tokens.items():
        if token is None:
            conditions.append(f"{_column(name)} IS NULL")
        else:
            conditions.append(f"{_column(name)} = %s")
            params.append(token)
    sql = f"UPDATE {_table()} SET {assignments} WHERE {' AND '.join(conditions)}"  # noqa: S608
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        return bool(cursor.rowcount == 1)


def tokens_rotate(*, batch_size: int = 500, dry_run: bool = False) -> RotationReport:
    """Re-encrypt every token not yet under the newest key; idempotent and resumable.

    Per connection: `rotated` (re-encrypted now), `current` (already under the newest
    key), `unreadable` (no configured key decrypts it: the connection is marked needs
    reconnect and its ciphertext left alone, so re-adding the key recovers it), or
    `skipped` (written by someone else meanwhile: run again to pick it up)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    primary = Fernet(settings.FERNET_KEYS[0])
    every_key = current_fernet()
    report = RotationReport(dry_run=dry_run)
    after_pk = 0
    while rows := _batch(after_pk=after_pk, size=batch_size):
        after_pk = rows[-1].pk
        report.scanned += len(rows)
        unreadable: list[_Row] = []
        # One event per rotated connection, not one summary: the trail is read per
        # connection (its admin page, its user's history), rotations are rare, and the
        # events go in one bulk insert per batch.
        events: list[ConnectionEvent] = []
        with transaction.atomic():
            for row in rows:
                try:
                    changed = _reencrypted(row, primary=primary, keys=every_key)
                except _Unreadable:
                    unreadable.append(row)
                    continue
                if not changed:
                    report.current += 1
                elif dry_run:
                    report.rotated += 1
                elif _write(row, changed):
                    report.rotated += 1
                    events.append(_rotated_event(row, columns=sorted(changed)))
                else:
                    report.skipped += 1
            ConnectionEvent.objects.bulk_create(events)
        report.unreadable += len(unreadable)
        if not dry_run:
            # Outside the batch transaction: marking sends the user an email.
            for row in unreadable:
                connection_mark_unreadable(connection_id=row.pk)
    logger.info(
        "Token key rotation%s: scanned=%d rotated=%d current=%d unreadable=%d skipped=%d",
        " (dry run)" if dry_run else "",
        report.scanned,
        report.rotated,
        report.current,
        report.unreadable,
        report.skipped,
    )
    return report


def _rotated_event(row: _Row, *, columns: list[str]) -> ConnectionEvent:
    return event_unsaved(
        connection_id=row.pk,
        user_id=row.user_id,
        account_id=row.account_id,
        kind=EventKind.KEYS_ROTATED,
        message="Stored tokens re-encrypted with the newest key.",
        detail={"columns": columns, "keys_configured": len(settings.FERNET_KEYS)},
    )
