"""Jira webhook deliveries: what the receiver stores, and for how long.

A delivery is verified and parsed at the boundary (atlassian.verify_jwt,
atlassian.parse_delivery), then mapped here to the connections and sites whose webhooks
it matched (`matchedWebhookIds`), stored once per site (the unique identifier makes a
retry store nothing), counted on the webhook rows, and announced with the
`jira_event_received` signal. No call to Atlassian: the answer goes out in milliseconds.
Received events are pruned after WEBHOOK_EVENT_RETENTION_DAYS by the scheduled run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.views.decorators.debug import sensitive_variables

from integrations import atlassian, clock
from integrations.lifecycle.events import prune_before
from integrations.models import JiraEvent, JiraSite, JiraWebhook
from integrations.signals import jira_event_received
from monitoring.models import Kind
from monitoring.recorder import count_event

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliveryResult:
    stored: int
    duplicates: int
    # Webhook rows the delivery matched: 0 means a webhook we no longer track.
    matched: int


@sensitive_variables("authorization")
def delivery_receive(
    *, authorization: str | None, identifier: str | None, retry: str | None, body: bytes
) -> DeliveryResult:
    """Verify, parse, store and announce one delivery, counted in the daily aggregates.
    Raises atlassian.DeliveryError (401 unverified, 400 malformed) before anything is written."""
    try:
        result = _receive(authorization=authorization, identifier=identifier, retry=retry, body=body)
    except atlassian.DeliveryError as exc:
        count_event(kind=Kind.DELIVERY, outcome="refused", reason=str(exc.status))
        raise
    outcome = "stored" if result.stored else "duplicate" if result.duplicates else "unmatched"
    count_event(kind=Kind.DELIVERY, outcome=outcome)
    return result


@dataclass(frozen=True)
class _Target:
    """A site the delivery matched, and its webhook rows that matched."""

    connection_id: int
    site_id: int
    row_ids: list[int]


def _receive(*, authorization: str | None, identifier: str | None, retry: str | None, body: bytes) -> DeliveryResult:
    atlassian.verify_jwt(authorization=authorization)
    event = atlassian.parse_delivery(identifier=identifier, retry=retry, body=body)
    targets = _targets(event)
    if not targets:
        logger.info("Jira delivery %s matched no webhook we track (%s)", event.identifier, event.event_type)
        return DeliveryResult(stored=0, duplicates=0, matched=0)
    now = clock.now()
    stored: list[_Target] = []
    duplicates = 0
    for target in targets:
        try:
            # The event and its webhooks' count commit together: one WAL flush, not two.
            with transaction.atomic():
                JiraEvent.objects.create(
                    connection_id=target.connection_id,
                    site_id=target.site_id,
                    identifier=event.identifier,
                    event_type=event.event_type,
                    issue_key=event.issue_key,
                    issue_summary=event.issue_summary,
                    actor_name=event.actor_name,
                    actor_account_id=event.actor_account_id,
                    occurred_at=event.occurred_at,
                    created_at=now,
                )
                JiraWebhook.objects.filter(pk__in=target.row_ids).update(
                    last_delivery_at=now, delivery_count=F("delivery_count") + 1
                )
        except IntegrityError:
            duplicates += 1
            continue
        stored.append(target)
    if stored and jira_event_received.has_listeners(JiraEvent):
        _announce(stored, event)
    logger.info(
        "Jira delivery %s (%s %s): stored for %d site(s), %d duplicate(s)%s",
        event.identifier,
        event.event_type,
        event.issue_key,
        len(stored),
        duplicates,
        " [retry]" if event.retry else "",
    )
    return DeliveryResult(stored=len(stored), duplicates=duplicates, matched=len(targets))


def _announce(stored: list[_Target], event: atlassian.DeliveryEvent) -> None:
    """jira_event_received for every stored site. Its rows are loaded here, only when
    someone listens: building them was most of the CPU time of a delivery."""
    sites = (
        JiraSite.objects.filter(pk__in=[target.site_id for target in stored])
        .select_related("connection")
        .defer("connection__access_token", "connection__refresh_token")
    )
    for site in sites:
        for receiver, response in jira_event_received.send_robust(
            sender=JiraEvent, connection=site.connection, site=site, event=event
        ):
            if isinstance(response, Exception):
                logger.error(
                    "A jira_event_received receiver (%s) failed on delivery %s: %s",
                    getattr(receiver, "__qualname__", receiver),
                    event.identifier,
                    type(response).__name__,
                )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


def _targets(event: atlassian.DeliveryEvent) -> list[_Target]:
    """Every site the delivery matched, by its webhook rows' ids only."""
    if not event.webhook_ids:
        return []
    rows = list(
        JiraWebhook.objects.filter(webhook_id__in=event.webhook_ids).values_list(
            "pk", "connection_id", "site_id", "site__cloud_id", "site__url"
        )
    )
    if len({cloud_id for *_, cloud_id, _url in rows}) > 1:
        # Webhook ids are Jira's per site: the same id on two sites is told apart by the
        # site the issue lives on. Nothing is stored when that cannot be decided.
        origin = _origin(event.issue_self)
        rows = [row for row in rows if origin and _origin(row[4]) == origin]
    targets: dict[int, _Target] = {}
    for pk, connection_id, site_id, _cloud_id, _url in rows:
        target = targets.setdefault(site_id, _Target(connection_id=connection_id, site_id=site_id, row_ids=[]))
        target.row_ids.append(pk)
    return list(targets.values())


def jira_events_prune(*, now: datetime, retention: timedelta | None = None, max_batches: int = 100) -> int:
    """Delete received events older than WEBHOOK_EVENT_RETENTION_DAYS (events.prune_before)."""
    cutoff = now - (retention or timedelta(days=settings.WEBHOOK_EVENT_RETENTION_DAYS))
    deleted = prune_before(JiraEvent, cutoff=cutoff, max_batches=max_batches)
    if deleted:
        logger.info("Pruned %d received Jira events older than %s", deleted, cutoff.date())
    return deleted
