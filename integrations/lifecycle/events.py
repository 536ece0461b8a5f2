"""Every write to the audit trail (ConnectionEvent), the system's and staff's alike."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models

from accounts.models import User
from integrations import clock
from integrations.models import Actor, ConnectionEvent, EventKind, JiraConnection

logger = logging.getLogger(__name__)

# Small deletes, each its own statement: never a long lock on the trail.
PRUNE_BATCH = 1000


def event_record(
    *,
    connection: JiraConnection | None,
    kind: EventKind,
    actor: Actor = Actor.SYSTEM,
    actor_user: User | None = None,
    message: str = "",
    detail: dict[str, Any] | None = None,
    user: User | None = None,
    account_id: str = "",
) -> ConnectionEvent:
    return ConnectionEvent.objects.create(
        connection=connection,
        user_id=connection.user_id if connection is not None else (user.pk if user else None),
        account_id=connection.account_id if connection is not None else account_id,
        kind=kind,
        actor=actor,
        actor_user=actor_user,
        message=message[:500],
        detail=detail or {},
        created_at=clock.now(),
    )


def event_staff_refresh(*, connection: JiraConnection, staff: User, outcome: str, message: str) -> ConnectionEvent:
    """What came of a staff member's "Refresh now" that did not store new tokens."""
    return event_record(
        connection=connection,
        kind=EventKind.STAFF_REFRESH,
        actor=Actor.STAFF,
        actor_user=staff,
        message=f"Refresh now: {outcome.replace('_', ' ')}. {message}".strip(),
        detail={"outcome": outcome},
    )


def event_unsaved(
    *, connection_id: int, user_id: int, account_id: str, kind: EventKind, message: str, detail: dict[str, Any]
) -> ConnectionEvent:
    """An event built for a bulk insert (key rotation writes one per connection per batch)."""
    return ConnectionEvent(
        connection_id=connection_id,
        user_id=user_id,
        account_id=account_id,
        kind=kind,
        actor=Actor.SYSTEM,
        message=message[:500],
        detail=detail,
        created_at=clock.now(),
    )


def events_prune(*, now: datetime, retention: timedelta | None = None, max_batches: int = 100) -> int:
    """Delete events older than `retention` (EVENT_RETENTION_DAYS); see prune_before."""
    cutoff = now - (retention or timedelta(days=settings.EVENT_RETENTION_DAYS))
    deleted = prune_before(ConnectionEvent, cutoff=cutoff, max_batches=max_batches)
    if deleted:
        logger.info("Pruned %d connection events older than %s", deleted, cutoff.date())
    return deleted


def prune_before(model: type[models.Model], *, cutoff: datetime, max_batches: int = 100) -> int:
    """Delete `model` rows whose created_at is before `cutoff`, oldest first, in batches of
    PRUNE_BATCH; at most `max_batches` per call, so a backlog is worked off over a few
    runs instead of holding one up. Returns how many were deleted."""
    manager = model._default_manager
    deleted = 0
    for _ in range(max_batches):
        oldest = manager.filter(created_at__lt=cutoff).order_by("created_at", "pk")
        ids = list(oldest.values_list("pk", flat=True)[:PRUNE_BATCH])
        if not ids:
            break
        deleted += manager.filter(pk__in=ids).delete()[0]
        if len(ids) < PRUNE_BATCH:
            break
    return deleted
