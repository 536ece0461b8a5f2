"""Key rotation: re-encrypt with the newest key, lose nothing, never overwrite what can't be read."""

from __future__ import annotations

import logging
from io import StringIO
from typing import Any

import pytest
import responses
from cryptography.fernet import Fernet
from django.core import mail
from django.core.management import CommandError, call_command
from django.db.models import F
from django.test import Client

from accounts.models import User
from integrations.lifecycle import keys
from integrations.lifecycle.keys import tokens_rotate
from integrations.lifecycle.refresh import RefreshOutcome, connection_refresh_for_access
from integrations.models import Actor, ConnectionEvent, ConnectionStatus, EventKind, JiraConnection
from tests.support.accounts import login_verified
from tests.support.connections import ConnectionFactory, fresh, new_key, raw_token, tamper
from tests.support.secrets import assert_no_secrets

COLUMNS = ("access_token", "refresh_token")


def raw_pair(connection: JiraConnection) -> tuple[bytes | None, bytes | None]:
    return raw_token(connection.pk, "access_token"), raw_token(connection.pk, "refresh_token")


@pytest.fixture
def old_key(settings: Any) -> str:
    key = new_key()
    settings.FERNET_KEYS = [key]
    return key


@pytest.fixture
def connections(alice: User, bob: User, make_connection: ConnectionFactory, old_key: str) -> list[JiraConnection]:
    """Five connections under the old key, one of them without an access token."""
    made = [make_connection(alice if n % 2 else bob) for n in range(4)]
    made.append(make_connection(alice, access_token=None))
    return made


def test_rotation_re_encrypts_every_token_so_the_old_key_can_go(
    connections: list[JiraConnection], old_key: str, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    plaintext = {c.pk: (c.access_token, c.refresh_token) for c in connections}
    newest = new_key()
    settings.FERNET_KEYS = [newest, old_key]

    with caplog.at_level(logging.DEBUG):
        report = tokens_rotate(batch_size=2)

    assert (report.scanned, report.rotated, report.current, report.unreadable, report.skipped) == (5, 5, 0, 0, 0)
    settings.FERNET_KEYS = [newest]
    for connection in connections:
        stored = fresh(connection)
        assert (stored.access_token, stored.refresh_token) == plaintext[connection.pk]
        assert stored.status == ConnectionStatus.ACTIVE
        assert stored.version == connection.version
        for raw in raw_pair(connection):
            if raw is not None:
                Fernet(newest).decrypt(raw)
    assert raw_token(connections[-1].pk, "access_token") is None
    events = ConnectionEvent.objects.filter(kind=EventKind.KEYS_ROTATED)
    assert sorted(events.values_list("connection_id", flat=True)) == sorted(c.pk for c in connections)
    assert set(events.values_list("actor", flat=True)) == {Actor.SYSTEM}
    assert set(events.values_list("user_id", flat=True)) == {c.user_id for c in connections}
    assert_no_secrets({"logs": caplog.text, "events": str(list(events.values_list("message", "detail")))}, "secret")


def test_second_run_rotates_nothing(connections: list[JiraConnection], old_key: str, settings: Any) -> None:
    settings.FERNET_KEYS = [new_key(), old_key]
    tokens_rotate()
    after_first = [raw_pair(c) for c in connections]

    report = tokens_rotate()

    assert (report.rotated, report.current, report.unreadable, report.skipped) == (0, 5, 0, 0)
    assert [raw_pair(c) for c in connections] == after_first
    assert ConnectionEvent.objects.filter(kind=EventKind.KEYS_ROTATED).count() == 5


def test_dry_run_counts_but_changes_no_byte(connections: list[JiraConnection], old_key: str, settings: Any) -> None:
    tamper(connections[0].pk, "refresh_token")
    before = [raw_pair(c) for c in connections]
    settings.FERNET_KEYS = [new_key(), old_key]

    report = tokens_rotate(dry_run=True)

    assert (report.rotated, report.current, report.unreadable, report.skipped) == (4, 0, 1, 0)
    assert [raw_pair(c) for c in connections] == before
    assert not ConnectionEvent.objects.exists()
    assert fresh(connections[0]).status == ConnectionStatus.ACTIVE
    assert mail.outbox == []


def test_tampered_token_marks_only_its_connection_and_keeps_its_bytes(
    connections: list[JiraConnection], old_key: str, settings: Any, client: Client, staff: User, alice: User
) -> None:
    broken = connections[1]
    assert broken.user == alice
    damaged = tamper(broken.pk, "refresh_token")
    access_before = raw_token(broken.pk, "access_token")
    newest = new_key()
    settings.FERNET_KEYS = [newest, old_key]

    report = tokens_rotate(batch_size=2)

    assert (report.rotated, report.current, report.unreadable, report.skipped) == (4, 0, 1, 0)
    stored = fresh(broken)
    assert (stored.status, stored.status_reason) == (ConnectionStatus.NEEDS_RECONNECT, "token_unreadable")
    assert raw_pair(broken) == (access_before, damaged)
    assert ConnectionEvent.objects.filter(connection=broken, kind=EventKind.NEEDS_RECONNECT).count() == 1
    assert not ConnectionEvent.objects.filter(connection=broken, kind=EventKind.KEYS_ROTATED).exists()
    assert [m.to for m in mail.outbox] == [[alice.email]]
    settings.FERNET_KEYS = [newest]
    for connection in connections:
        if connection.pk != broken.pk:
            assert fresh(connection).status == ConnectionStatus.ACTIVE
            assert fresh(connection).refresh_token == connection.refresh_token

    # A second run neither marks it again nor rewrites it.
    settings.FERNET_KEYS = [newest, old_key]
    again = tokens_rotate()
    assert (again.rotated, again.unreadable) == (0, 1)
    assert raw_pair(broken) == (access_before, damaged)
    assert len(mail.outbox) == 1

    client.force_login(alice)
    page = client.get("/settings/")
    assert page.status_code == 200
    assert f'id="reconnect-banner-{broken.pk}"' in page.content.decode()
    login_verified(client, staff)
    admin_page = client.get(f"/admin/integrations/jiraconnection/{broken.pk}/change/")
    assert admin_page.status_code == 200
    assert "token_unreadable" in admin_page.content.decode()


def test_removing_a_key_without_rotating_loses_access_but_never_the_ciphertext(
    alice: User,
    make_connection: ConnectionFactory,
    old_key: str,
    settings: Any,
    client: Client,
    mocked: responses.RequestsMock,
) -> None:
    connection = make_connection(alice)
    before = raw_pair(connection)
    settings.FERNET_KEYS = [new_key()]

    assert fresh(connection).refresh_token is None
    client.force_login(alice)
    page = client.get("/settings/")
    assert page.status_code == 200
    assert f'id="connection-{connection.pk}"' in page.content.decode()

    result = connection_refresh_for_access(connection_id=connection.pk, rejected=True)

    assert result.outcome == RefreshOutcome.NEEDS_RECONNECT
    assert len(mocked.calls) == 0
    stored = fresh(connection)
    assert (stored.status, stored.status_reason) == (ConnectionStatus.NEEDS_RECONNECT, "token_unreadable")
    assert raw_pair(connection) == before
    settings.FERNET_KEYS = [new_key(), old_key]
    assert fresh(connection).refresh_token == "refresh-token-1-secret"


@pytest.mark.parametrize("bump_version", [True, False], ids=["version-bumped", "same-version"])
def test_connection_written_during_rotation_is_skipped_not_overwritten(
    connections: list[JiraConnection], old_key: str, settings: Any, monkeypatch: pytest.MonkeyPatch, bump_version: bool
) -> None:
    target = connections[2]
    settings.FERNET_KEYS = [new_key(), old_key]
    original = keys._reencrypted

    def concurrent_write(row: Any, **kwargs: Any) -> dict[str, bytes]:
        # A refresh lands between rotation's read and its write.
        if row.pk == target.pk:
            changes: dict[str, Any] = {"access_token": "refreshed-meanwhile-secret"}
            if bump_version:
                changes["version"] = F("version") + 1
            JiraConnection.objects.filter(pk=target.pk).update(**changes)
        return original(row, **kwargs)

    monkeypatch.setattr(keys, "_reencrypted", concurrent_write)
    report = tokens_rotate()

    assert (report.rotated, report.skipped) == (4, 1)
    assert fresh(target).access_token == "refreshed-meanwhile-secret"
    assert fresh(target).refresh_token == target.refresh_token
    monkeypatch.setattr(keys, "_reencrypted", original)
    assert tokens_rotate().rotated == 1


def test_command_reports_counts(connections: list[JiraConnection], old_key: str, settings: Any) -> None:
    settings.FERNET_KEYS = [new_key(), old_key]
    before = [raw_pair(c) for c in connections]

    dry = StringIO()
    call_command("rotate_token_keys", "--dry-run", "--batch-size", "2", stdout=dry)
    assert "Dry run" in dry.getvalue()
    assert "rotated: 5" in dry.getvalue()
    assert [raw_pair(c) for c in connections] == before

    out = StringIO()
    call_command("rotate_token_keys", stdout=out)
    assert "scanned: 5, rotated: 5, already current: 0, unreadable: 0, skipped: 0" in out.getvalue()
    assert [raw_pair(c) for c in connections] != before


def test_command_refuses_a_batch_size_below_one(db: None) -> None:
    with pytest.raises(CommandError):
        call_command("rotate_token_keys", "--batch-size", "0", stdout=StringIO())
