"""The one expiry no refresh prevents: Atlassian ends every grant 365 days after consent.

Each user is emailed twice before their connection's reconnect-by date, 14 days and 1 day
ahead, once each even when runs overlap: a conditional UPDATE of the connection's
`consent_warnings_sent` claims each warning before the mail goes out. Reconnecting
starts a new year (lifecycle.connect resets the count).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db.models import Q
from django.urls import reverse

from integrations.lifecycle.events import event_record
from integrations.models import CONSENT_LIFETIME, ConnectionStatus, EventKind, JiraConnection

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsentWarning:
    number: int  # the value of consent_warnings_sent once this one is sent
    ahead: timedelta


WARNINGS = (ConsentWarning(number=1, ahead=timedelta(days=14)), ConsentWarning(number=2, ahead=timedelta(days=1)))


def _due(warning: ConsentWarning, *, now: datetime) -> Q:
    # reconnect_by - ahead <= now < reconnect_by, on the indexed column (conn_consent_idx).
    return Q(
        first_consented_at__lte=now + warning.ahead - CONSENT_LIFETIME,
        first_consented_at__gt=now - CONSENT_LIFETIME,
        consent_warnings_sent__lt=warning.number,
    )


def consent_warnings_send(*, now: datetime, batch_size: int = 500) -> int:
    """Send every consent-expiry warning that has come due; returns how many were sent.
    A connection that first shows up inside the last day gets only the 1-day warning."""
    sent = 0
    # Latest warning first: a connection already inside the last day skips the 14-day one.
    for warning in reversed(WARNINGS):
        candidates = list(
            JiraConnection.objects.filter(_due(warning, now=now))
            .exclude(status=ConnectionStatus.NEEDS_RECONNECT)
            .values_list("pk", flat=True)[:batch_size]
        )
        for connection_id in candidates:
            sent += _warn(connection_id=connection_id, warning=warning, now=now)
    return sent


def _warn(*, connection_id: int, warning: ConsentWarning, now: datetime) -> int:
    claimed = (
        JiraConnection.objects.filter(pk=connection_id)
        .filter(_due(warning, now=now))
        .exclude(status=ConnectionStatus.NEEDS_RECONNECT)
        .update(consent_warnings_sent=warning.number)
    )
    if claimed != 1:
        return 0  # another run sent it, or the user reconnected meanwhile
    connection = (
        JiraConnection.objects.select_related("user").defer("access_token", "refresh_token").get(pk=connection_id)
    )
    try:
        _email(connection=connection, now=now)
    except Exception:
        # Unclaim, so the next run tries again; a warning must not be lost to a mail outage.
        JiraConnection.objects.filter(pk=connection_id, consent_warnings_sent=warning.number).update(
            consent_warnings_sent=warning.number - 1
        )
        logger.exception(
            "Could not email user %s about connection %s's consent expiry", connection.user_id, connection_id
        )
        return 0
    event_record(
        connection=connection,
        kind=EventKind.CONSENT_EXPIRY_WARNED,
        message=f"Emailed: reconnect by {connection.reconnect_by:%Y-%m-%d}",
        detail={"days_ahead": warning.ahead.days},
    )
    return 1


def _email(*, connection: JiraConnection, now: datetime) -> None:
    link = f"{settings.SITE_URL}{reverse('settings')}"
    days = max(0, (connection.reconnect_by - now).days)
    when = "tomorrow" if days <= 1 else f"in {days} days"
    body = (
        f"Atlassian ends every app's access one year after you granted it. Your Jira connection "
        f"({connection.account_name or connection.account_id}) stops working {when}, on "
        f"{connection.reconnect_by:%Y-%m-%d %H:%M} UTC.\n\n"
        f"Reconnect it before then from your settings page (press Reconnect): {link}\n"
        "Reconnecting takes a minute and starts a new year.\n"
    )
    send_mail("Reconnect your Jira account before it expires", body, None, [connection.user.email])
