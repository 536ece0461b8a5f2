"""Bulk seeding: users and connections in thousands per INSERT, tokens encrypted as usual.

bulk_create goes through TokenField.get_db_prep_save, so every stored token is a real
Fernet ciphertext of a real-sized token, exactly as the portal writes them.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from accounts.models import User
from integrations import atlassian
from integrations.models import ConnectionStatus, JiraConnection, JiraSite

BATCH = 2000
SCOPES = ["read:jira-work", "read:jira-user", "read:me", "offline_access"]
# An unusable password hash: bench users never log in with a password.
NO_PASSWORD = "!bench"


def users(count: int, *, prefix: str) -> list[User]:
    now = timezone.now()
    rows = [User(email=f"{prefix}{n:06d}@bench.example", password=NO_PASSWORD, date_joined=now) for n in range(count)]
    return User.objects.bulk_create(rows, batch_size=BATCH)


def fake_token(size: int) -> str:
    """Token-shaped and token-sized (Atlassian's are JWTs of 1-2 KB) for rows never sent anywhere."""
    return f"eyJraWQiOiJiZW5jaCJ9.{secrets.token_urlsafe(size)}.{secrets.token_urlsafe(256)}"


def fake_grants(count: int, *, prefix: str) -> list[dict[str, Any]]:
    """Grant look-alikes for connections that never call Atlassian (account ids PREFIXnnnnnn)."""
    return [
        {"account_id": f"{prefix}{n:06d}", "access_token": fake_token(900), "refresh_token": fake_token(600)}
        for n in range(count)
    ]


def connections(
    owners: Sequence[User],
    grants: Sequence[dict[str, Any]],
    *,
    expires_at: Sequence[datetime | None] | datetime | None,
    tokens_issued_at: datetime | None = None,
    statuses: Sequence[str] | None = None,
    next_attempt_at: Sequence[datetime | None] | None = None,
    fields: Sequence[dict[str, Any]] = (),
) -> list[JiraConnection]:
    """One connection per (owner, grant). `grants` are the sandbox's token answers
    ({"account_id", "access_token", "refresh_token"}) or look-alikes; `fields`, if given
    one per row, set any field on top (timestamps drawn per connection)."""
    now = timezone.now()
    issued = tokens_issued_at or now - timedelta(hours=1)
    rows = []
    for index, (owner, grant) in enumerate(zip(owners, grants, strict=True)):
        expiry = expires_at[index] if isinstance(expires_at, Sequence) else expires_at
        account_id = str(grant["account_id"])
        rows.append(
            JiraConnection(
                user=owner,
                account_id=account_id,
                account_name=f"Bench {account_id}",
                account_email=f"{account_id.replace(':', '-')}@example.com",
                access_token=grant["access_token"],
                refresh_token=grant["refresh_token"],
                scopes=SCOPES,
                access_token_expires_at=expiry,
                tokens_issued_at=issued,
                first_consented_at=issued - timedelta(days=7),
                # In use: the scheduled run keeps these warm (lifecycle.due).
                last_used_at=now,
                status=statuses[index] if statuses else ConnectionStatus.ACTIVE,
                next_attempt_at=next_attempt_at[index] if next_attempt_at else None,
            )
        )
    for row, values in zip(rows, fields, strict=bool(fields)):
        for name, value in values.items():
            setattr(row, name, value)
    return JiraConnection.objects.bulk_create(rows, batch_size=BATCH)


def sites_from_atlassian(connection: JiraConnection, *, access_token: str) -> list[JiraSite]:
    """The connection's sites as the connect flow stores them (accessible-resources)."""
    found = atlassian.accessible_resources(access_token=access_token)
    return JiraSite.objects.bulk_create(
        JiraSite(
            connection=connection,
            cloud_id=site.cloud_id,
            name=site.name,
            url=site.url,
            avatar_url=site.avatar_url,
            scopes=site.scopes,
        )
        for site in found
    )
