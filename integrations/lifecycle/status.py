"""A connection's one terminal state: needs reconnect, and the email that says so."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import send_mail
from django.urls import reverse

from accounts.models import User
from integrations import clock
from integrations.lifecycle.events import event_record
from integrations.models import Actor, ConnectionStatus, EventKind, JiraConnection

logger = logging.getLogger(__name__)

UNREADABLE_REASON = "token_unreadable"
UNREADABLE_MESSAGE = (
    "The stored token could not be decrypted with any configured key (a key was removed "
    "too early or the data is damaged). Reconnect Jira to continue."
)


def connection_mark_needs_reconnect(
    *,
    connection_id: int,
    reason: str,
    message: str,
    actor: Actor = Actor.SYSTEM,
    actor_user: User | None = None,
    only_if_version: int | None = None,
) -> bool:
    """Turn a connection to needs_reconnect once; email its user. False if nothing changed
    (already marked, gone, or — with only_if_version — the tokens moved on meanwhile)."""
    rows = JiraConnection.objects.filter(pk=connection_id).exclude(status=ConnectionStatus.NEEDS_RECONNECT)
    if only_if_version is not None:
        rows = rows.filter(version=only_if_version)
    changed = rows.update(
        status=ConnectionStatus.NEEDS_RECONNECT,
        status_reason=reason[:64],
        status_message=message[:500],
        next_attempt_at=None,
        claim_id=None,
        claimed_until=None,
        updated_at=clock.now(),
    )
    if changed != 1:
        return False
    connection = JiraConnection.objects.select_related("user").get(pk=connection_id)
    event_record(
        connection=connection,
        kind=EventKind.STAFF_MARK_NEEDS_RECONNECT if actor == Actor.STAFF else EventKind.NEEDS_RECONNECT,
        actor=actor,
        actor_user=actor_user,
        message=message,
        detail={"reason": reason},
    )
    logger.warning("Jira connection %s needs reconnect: %s", connection_id, reason)
    _email_needs_reconnect(connection=connection, message=message)
    return True


def connection_mark_unreadable(*, connection_id: int) -> bool:
    """No configured key decrypts the stored tokens: only a new consent helps. The
    ciphertext stays, so re-adding the key recovers the connection."""
    return connection_mark_needs_reconnect(
        connection_id=connection_id, reason=UNREADABLE_REASON, message=UNREADABLE_MESSAGE
    )


def _email_needs_reconnect(*, connection: JiraConnection, message: str) -> None:
    link = f"{settings.SITE_URL}{reverse('settings')}"
    body = (
        f"Your Jira connection ({connection.account_name or connection.account_id}) stopped working "
        f"and needs to be reconnected.\n\nWhy: {message}\n\n"
        f"Reconnect it from your settings page: {link}\n"
    )
    try:
        send_mail("Reconnect your Jira account", body, None, [connection.user.email])
    except Exception:
        # The status change is what matters; a mail outage must not undo it.
        logger.exception("Could not email user %s about connection %s", connection.user_id, connection.pk)
