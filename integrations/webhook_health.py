"""How healthy a site's Jira webhooks are: one rule, read by the settings page, the
support admin and the Connection health page.

A site's health is its worst webhook: expired (registered, and its 30 days are over),
failing (registration or extension failed and is being retried), pending (not registered
yet) or live. The rule exists twice on purpose, in the same place: `webhook_health` for
one site whose rows are already loaded, `HealthRank` in SQL to count the whole fleet in
one query. tests/integrations/test_webhook_health.py checks that the two agree.

Reads models only: lifecycle keeps the webhooks alive, monitoring reports on them, and
both import this without importing each other.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Case, Count, IntegerField, Max, Q, QuerySet, Value, When

from integrations.models import JiraWebhook, WebhookStatus

# Under this much life left, extension has failed for days (an idle connection's are
# extended from 12 days left, lifecycle.webhooks): the admin calls it unhealthy.
ALERT_WHEN_LEFT = timedelta(days=7)
# Never registered this long after its row was made: unhealthy too.
PENDING_ALERT = timedelta(hours=1)


class Health(enum.StrEnum):
    LIVE = "live"
    PENDING = "pending"
    FAILING = "failing"
    EXPIRED = "expired"

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    Health.LIVE: "Live updates on",
    Health.PENDING: "Registering",
    Health.FAILING: "Failing, retrying",
    Health.EXPIRED: "Expired",
}
# Worst last: a site is as healthy as its worst webhook.
_WORST_LAST = (Health.LIVE, Health.PENDING, Health.FAILING, Health.EXPIRED)


def unhealthy(*, now: datetime, prefix: str = "") -> Q:
    """Webhooks that need attention: failing, close to expiry (extension has failed for
    days), or never registered long after they should have been. `prefix` reaches them
    from another model ("webhooks__" from a connection)."""
    return (
        Q(**{f"{prefix}status": WebhookStatus.FAILING})
        | Q(**{f"{prefix}expires_at__lte": now + ALERT_WHEN_LEFT})
        | Q(**{f"{prefix}webhook_id__isnull": True, f"{prefix}created_at__lte": now - PENDING_ALERT})
    )


@dataclass(frozen=True)
class SiteWebhookHealth:
    state: Health
    expires_at: datetime | None
    last_delivery_at: datetime | None
    last_error: str
    next_attempt_at: datetime | None

    @property
    def label(self) -> str:
        return self.state.label


# The columns webhook_health reads (with the keys to group rows by site): enough for
# `only()` when the rows come with other models.
HEALTH_FIELDS = (
    "site_id",
    "connection_id",
    "webhook_id",
    "status",
    "expires_at",
    "last_delivery_at",
    "last_error",
    "next_attempt_at",
)


def webhook_health(*, webhooks: Iterable[JiraWebhook], now: datetime) -> SiteWebhookHealth | None:
    """One site's webhooks summed up: the worst state, the soonest expiry, the latest
    delivery and error. None when the site has none."""
    rows = list(webhooks)
    if not rows:
        return None
    registered = [row for row in rows if row.webhook_id is not None and row.expires_at is not None]
    if any(row.expired(now=now) for row in registered):
        state = Health.EXPIRED
    elif any(row.status == WebhookStatus.FAILING for row in rows):
        state = Health.FAILING
    elif any(row.webhook_id is None for row in rows):
        state = Health.PENDING
    else:
        state = Health.LIVE
    failing = [row for row in rows if row.status == WebhookStatus.FAILING]
    deliveries = [row.last_delivery_at for row in rows if row.last_delivery_at is not None]
    retries = [row.next_attempt_at for row in failing if row.next_attempt_at is not None]
    return SiteWebhookHealth(
        state=state,
        expires_at=min((row.expires_at for row in registered if row.expires_at), default=None),
        last_delivery_at=max(deliveries, default=None),
        last_error="; ".join(dict.fromkeys(row.last_error for row in failing if row.last_error)),
        next_attempt_at=min(retries, default=None),
    )


def _row_rank(*, now: datetime) -> Case:
    """One webhook's state as its place in _WORST_LAST; the same order as webhook_health."""
    rank = {state: n for n, state in enumerate(_WORST_LAST)}
    return Case(
        When(webhook_id__isnull=False, expires_at__lte=now, then=Value(rank[Health.EXPIRED])),
        When(status=WebhookStatus.FAILING, then=Value(rank[Health.FAILING])),
        When(webhook_id__isnull=True, then=Value(rank[Health.PENDING])),
        default=Value(rank[Health.LIVE]),
        output_field=IntegerField(),
    )


def sites_by_health(*, now: datetime, webhooks: QuerySet[JiraWebhook] | None = None) -> dict[Health, int]:
    """How many sites are in each state, in one query whatever the number of sites (a
    GROUP BY site inside an aggregate: the database does the counting)."""
    rows = webhooks if webhooks is not None else JiraWebhook.objects.all()
    per_site = rows.order_by().values("site_id").annotate(rank=Max(_row_rank(now=now)))
    counts = per_site.aggregate(
        **{state.value: Count("site_id", filter=Q(rank=n)) for n, state in enumerate(_WORST_LAST)},
    )
    return {state: int(counts[state.value] or 0) for state in _WORST_LAST}
