"""What the "Connection health" admin page shows, read in a fixed number of queries.

Nine queries whatever the number of connections: connections by status and reason (one
GROUP BY), the period's daily counts, the failing connections shown (LIMIT), the
reconnect-by deadlines shown (LIMIT) and how many there are, the run heartbeat, and three
for webhook health by site (sites by state, the unhealthy count with the latest delivery,
and the webhooks of the unhealthy sites shown). Nothing here loads a token.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.db.models import Count, F, Max, Min

from integrations.models import CONSENT_LIFETIME, ConnectionStatus, JiraConnection, JiraSite, JiraWebhook
from integrations.webhook_health import (
    HEALTH_FIELDS,
    Health,
    SiteWebhookHealth,
    sites_by_health,
    unhealthy,
    webhook_health,
)
from monitoring.models import LATENCY_BUCKETS, LATENCY_SUM, DailyCount, Kind
from monitoring.recorder import refresh_last_success

PERIODS = (30, 90)
FAILING_SHOWN = 100
DEADLINES_SHOWN = 100
UNHEALTHY_SITES_SHOWN = 100
DEADLINE_WINDOW = timedelta(days=30)
SOURCE_LABELS = {"scheduled": "Scheduled run", "on_demand": "On demand (Jira calls)", "staff": "Staff (Refresh now)"}


@dataclass(frozen=True)
class Series:
    label: str
    values: list[int]

    @property
    def total(self) -> int:
        return sum(self.values)


@dataclass(frozen=True)
class DailyChart:
    """Stacked series over consecutive days, oldest first."""

    title: str
    days: list[date]
    series: list[Series]

    def rows(self) -> list[tuple[date, list[int]]]:
        return [(day, [s.values[i] for s in self.series]) for i, day in enumerate(self.days)]


@dataclass(frozen=True)
class StatusCount:
    status: str
    label: str
    count: int
    reasons: list[tuple[str, int]]


@dataclass(frozen=True)
class ConnectionLine:
    pk: int
    user_email: str
    account: str
    reason: str
    failure_count: int
    next_attempt_at: datetime | None
    reconnect_by: datetime | None


@dataclass(frozen=True)
class FailingGroup:
    reason: str
    count: int
    connections: list[ConnectionLine]


@dataclass(frozen=True)
class SourceTotals:
    source: str
    label: str
    counts: dict[str, int]


@dataclass(frozen=True)
class KindTable:
    """A counted kind other than refreshes (e.g. webhook deliveries), totals by source."""

    label: str
    rows: list[tuple[str, str, str, int]]


@dataclass(frozen=True)
class WebhookSiteLine:
    site_pk: int
    site_name: str
    site_url: str
    connection_pk: int
    user_email: str
    health: SiteWebhookHealth


@dataclass(frozen=True)
class WebhookFleet:
    """Webhook health by site: every site with webhooks counted by its worst webhook, and
    the sites that need a look (failing, within ALERT_WHEN_LEFT of expiry, or never
    registered), most urgent first."""

    by_health: list[tuple[Health, int]]
    unhealthy_total: int
    unhealthy: list[WebhookSiteLine]
    last_delivery_at: datetime | None

    @property
    def sites(self) -> int:
        return sum(n for _, n in self.by_health)


@dataclass(frozen=True)
class HealthPage:
    now: datetime
    days: int
    statuses: list[StatusCount]
    total: int
    last_run: datetime | None
    successes: DailyChart
    failures: DailyChart
    sources: list[SourceTotals]
    latency: list[tuple[str, int]]
    latency_mean_ms: int | None
    failing: list[FailingGroup]
    failing_shown: int
    deadlines: list[ConnectionLine]
    deadlines_total: int
    webhooks: WebhookFleet
    other_kinds: list[KindTable] = field(default_factory=list)

    @property
    def failing_total(self) -> int:
        return sum(group.count for group in self.failing)


def _statuses() -> tuple[list[StatusCount], int]:
    counts: dict[str, int] = defaultdict(int)
    reasons: dict[str, list[tuple[str, int]]] = defaultdict(list)
    rows = JiraConnection.objects.values_list("status", "status_reason").annotate(n=Count("pk")).order_by()
    for status, reason, n in rows:
        counts[status] += n
        if reason:
            reasons[status].append((reason, n))
    statuses = [
        StatusCount(status.value, status.label, counts[status.value], sorted(reasons[status.value]))
        for status in ConnectionStatus
    ]
    return statuses, sum(counts.values())


# The outcome columns of the "by source" table.
SOURCE_OUTCOMES = ("refreshed", "recovered", "transient_failure", "needs_reconnect", "error")


@dataclass(frozen=True)
class _Daily:
    successes: DailyChart
    failures: DailyChart
    sources: list[SourceTotals]
    latency: list[tuple[str, int]]
    latency_mean_ms: int | None
    other_kinds: list[KindTable]


def _daily(*, start: date, today: date) -> _Daily:
    days = [start + timedelta(days=n) for n in range((today - start).days + 1)]
    index = {day: n for n, day in enumerate(days)}
    success: dict[str, list[int]] = {"Refreshed": [0] * len(days), "Recovered (was failing)": [0] * len(days)}
    failing: dict[str, list[int]] = defaultdict(lambda: [0] * len(days))
    needs: list[int] = [0] * len(days)
    errors: list[int] = [0] * len(days)
    by_source: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SOURCE_OUTCOMES, 0))
    latency: dict[str, int] = defaultdict(int)
    others: dict[str, dict[tuple[str, str, str], int]] = defaultdict(lambda: defaultdict(int))
    rows = DailyCount.objects.filter(day__gte=start, day__lte=today).values_list(
        "day", "kind", "outcome", "reason", "source", "value"
    )
    for day, kind, outcome, reason, source, value in rows:
        n = index[day]
        if kind == Kind.TOKEN_LATENCY:
            latency[outcome] += value
            continue
        if kind != Kind.REFRESH:
            others[kind][(source, outcome, reason)] += value
            continue
        if outcome in by_source[source]:
            by_source[source][outcome] += value
        if outcome == "refreshed":
            success["Refreshed"][n] += value
        elif outcome == "recovered":
            success["Recovered (was failing)"][n] += value
        elif outcome == "transient_failure":
            failing[reason or "unknown"][n] += value
        elif outcome == "needs_reconnect":
            needs[n] += value
        elif outcome == "error":
            errors[n] += value
    failure_series = [Series(f"Failing: {reason}", values) for reason, values in sorted(failing.items())]
    failure_series += [Series("Needs reconnect", needs), Series("Error (bug or configuration)", errors)]
    successes = DailyChart("Refreshed per day", days, [Series(label, v) for label, v in success.items()])
    failures = DailyChart("Failures per day, by reason", days, failure_series)
    sources = [
        SourceTotals(source, SOURCE_LABELS.get(source, source or "(none)"), counts)
        for source, counts in sorted(by_source.items())
    ]
    buckets = [*(str(bound) for bound in LATENCY_BUCKETS), "+Inf"]
    histogram = [(bucket, latency[bucket]) for bucket in buckets]
    calls = sum(n for _, n in histogram)
    mean = round(latency[LATENCY_SUM] / calls) if calls else None
    kinds = {kind.value: kind.label for kind in Kind}
    other_tables = [
        KindTable(kinds.get(kind, kind), sorted((*key, n) for key, n in counts.items()))
        for kind, counts in sorted(others.items())
    ]
    return _Daily(successes, failures, sources, histogram, mean, other_tables)


def _line(row: dict[str, object]) -> ConnectionLine:
    consented = row["first_consented_at"]
    assert isinstance(consented, datetime)
    next_attempt = row["next_attempt_at"]
    return ConnectionLine(
        pk=int(str(row["pk"])),
        user_email=str(row["user__email"]),
        account=str(row["account_name"] or row["account_id"]),
        reason=str(row["status_reason"]),
        failure_count=int(str(row["failure_count"])),
        next_attempt_at=next_attempt if isinstance(next_attempt, datetime) else None,
        reconnect_by=consented + CONSENT_LIFETIME,
    )


LINE_FIELDS = (
    "pk",
    "user__email",
    "account_name",
    "account_id",
    "status_reason",
    "failure_count",
    "next_attempt_at",
    "first_consented_at",
)


def _failing(statuses: list[StatusCount]) -> tuple[list[FailingGroup], int]:
    rows = (
        JiraConnection.objects.filter(status=ConnectionStatus.REFRESH_FAILING)
        .order_by("status_reason", "-failure_count", "pk")
        .values(*LINE_FIELDS)[:FAILING_SHOWN]
    )
    shown: dict[str, list[ConnectionLine]] = defaultdict(list)
    for row in rows:
        line = _line(row)
        shown[line.reason].append(line)
    failing = next(s for s in statuses if s.status == ConnectionStatus.REFRESH_FAILING)
    reasons = dict(failing.reasons)
    if failing.count > sum(reasons.values()):
        reasons[""] = failing.count - sum(reasons.values())
    groups = [FailingGroup(reason, n, shown.get(reason, [])) for reason, n in sorted(reasons.items())]
    return groups, sum(len(lines) for lines in shown.values())


def _deadlines(*, now: datetime) -> tuple[list[ConnectionLine], int]:
    # reconnect_by = first_consented_at + CONSENT_LIFETIME, compared on the indexed column.
    upcoming = JiraConnection.objects.exclude(status=ConnectionStatus.NEEDS_RECONNECT).filter(
        first_consented_at__gt=now - CONSENT_LIFETIME,
        first_consented_at__lte=now - CONSENT_LIFETIME + DEADLINE_WINDOW,
    )
    lines = [_line(row) for row in upcoming.order_by("first_consented_at", "pk").values(*LINE_FIELDS)[:DEADLINES_SHOWN]]
    # Counted even when all fit on the page: the same queries whatever the table holds.
    return lines, upcoming.count()


def _webhooks(*, now: datetime) -> WebhookFleet:
    by_health = sites_by_health(now=now)
    needing_look = JiraWebhook.objects.filter(unhealthy(now=now))
    summary = JiraWebhook.objects.aggregate(
        unhealthy_sites=Count("site_id", distinct=True, filter=unhealthy(now=now)),
        last_delivery_at=Max("last_delivery_at"),
    )
    # Soonest expiry first, never-registered ones (no expiry) before all: the order in
    # which they would stop delivering. The webhooks of the sites shown come in one query
    # (a sliced subquery), so the count stays fixed even when none is shown.
    shown_sites = (
        JiraSite.objects.filter(pk__in=needing_look.values("site_id"))
        .annotate(soonest=Min("webhooks__expires_at"))
        .order_by(F("soonest").asc(nulls_first=True), "pk")
        .values("pk")[:UNHEALTHY_SITES_SHOWN]
    )
    rows = (
        JiraWebhook.objects.filter(site_id__in=shown_sites)
        .select_related("site", "connection__user")
        .only(*HEALTH_FIELDS, "site__name", "site__url", "connection__user__email")  # no token column
    )
    by_site: dict[int, list[JiraWebhook]] = defaultdict(list)
    for row in rows:
        by_site[row.site_id].append(row)
    lines = []
    for webhooks in by_site.values():
        health = webhook_health(webhooks=webhooks, now=now)
        assert health is not None  # every site here has at least the row that matched
        site, connection = webhooks[0].site, webhooks[0].connection
        lines.append(
            WebhookSiteLine(
                site_pk=site.pk,
                site_name=site.name or site.url,
                site_url=site.url,
                connection_pk=connection.pk,
                user_email=connection.user.email,
                health=health,
            )
        )
    lines.sort(key=lambda line: (line.health.expires_at is not None, line.health.expires_at or now, line.site_pk))
    return WebhookFleet(
        by_health=list(by_health.items()),
        unhealthy_total=int(summary["unhealthy_sites"] or 0),
        unhealthy=lines,
        last_delivery_at=summary["last_delivery_at"],
    )


def health_page(*, now: datetime, days: int) -> HealthPage:
    """Everything the page shows for the last `days` days (today included)."""
    if days not in PERIODS:
        raise ValueError(f"days must be one of {PERIODS}")
    today = now.date()
    statuses, total = _statuses()
    daily = _daily(start=today - timedelta(days=days - 1), today=today)
    failing, failing_shown = _failing(statuses)
    deadlines, deadlines_total = _deadlines(now=now)
    return HealthPage(
        now=now,
        days=days,
        statuses=statuses,
        total=total,
        last_run=refresh_last_success(),
        successes=daily.successes,
        failures=daily.failures,
        sources=daily.sources,
        latency=daily.latency,
        latency_mean_ms=daily.latency_mean_ms,
        failing=failing,
        failing_shown=failing_shown,
        deadlines=deadlines,
        deadlines_total=deadlines_total,
        webhooks=_webhooks(now=now),
        other_kinds=daily.other_kinds,
    )
