"""Cost follows use: token calls and audit rows in a day of 100,000 connections, 1 % used.

Two policies over the same population, each seeded in its own steady state:

* **before** (as on 670ddb4): every connection refreshed whenever its access token is
  within `due_within` of expiry, one audit row (`refreshed`) per refresh;
* **after** (today, lifecycle.due.DueRule): warm / keep-alive / retry; a routine refresh
  writes no audit row; the consent-expiry warnings (lifecycle.consent) write one each.

The population: 1 % of connections used every hour all day (as ConnectionTokens records
use: at most every 5 minutes); the rest idle, last used 2 days or more ago, their refresh
token last used uniformly 0-30 days ago; consent given uniformly 31-364 days ago (each
connection's warnings already sent as far as its age says). No refresh fails.

**The simulation** walks the day at full size in 15-minute cron ticks on PostgreSQL, with
no token endpoint. At each tick the used connections call Jira, then the scheduled run.
Real code: the due set is lifecycle.due.connections_due with the policy's DueRule; the
consent warnings are lifecycle.consent.consent_warnings_send (emails to memory), whose
audit rows are counted from the table. Emulated: a refresh is one bulk UPDATE of what a
successful one stores (expiry = now + the token lifetime - atlassian.EXPIRY_MARGIN, refresh
token used now, refresh_count + 1); a Jira call refreshes on demand when the stored token
has expired (access.expired) and records use (access.USE_RECORD_INTERVAL), in bulk;
"before" is DueRule with a warm window of 100 years (every connection has a last use, so
the warm branch is 670ddb4's expiry branch and keep-alive never comes); its audit rows are
counted, one per refresh, and written (INSERT … SELECT, as 670ddb4 worded them) for the
first hour only, to measure what a row costs on disk: all day they took 10 minutes.

**The validation** replays the same day for a smaller population through the real code:
lifecycle.run.refresh_due at every tick, Jira calls through access.jira_for, the portal's
clock (integrations.clock) and the sandbox's moved together; the sandbox counts token
calls. It must match the simulation of that same population exactly. "Before" replays with
today's code at the 100-year warm window; its audit rows (one per refresh) are emulated.

Webhooks are off in both (ATLASSIAN_WEBHOOKS): their upkeep is not part of this figure.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from unittest import mock

from django.db import connection as db_connection
from django.db.models import Count, F
from django.test.utils import override_settings
from django.utils import timezone

from accounts.models import User
from bench import seed
from bench.harness import BenchError, Outcome, Row, analyze, reset_data
from integrations import atlassian, clock
from integrations.lifecycle import access
from integrations.lifecycle import run as refresh_run
from integrations.lifecycle.consent import WARNINGS, consent_warnings_send
from integrations.lifecycle.due import DueRule, connections_due, expired
from integrations.lifecycle.refresh import RefreshOutcome
from integrations.models import ConnectionEvent, EventKind, JiraConnection, JiraSite
from sandbox.testing import SandboxClient
from tests.support.clock import FakeClock
from tests.support.refreshes import on_demand_refreshes

CONNECTIONS = 100_000
USED_SHARE = 0.01
PROJECTED = 1_000_000
# Replayed through the real code: "before" costs 32 token calls per connection a day.
VALIDATE_AFTER = 2_000
VALIDATE_BEFORE = 200
TICK = timedelta(minutes=15)
TICKS = 96
USE_EVERY = 4  # ticks: the used connections call Jira every hour
# "Before" writes its audit rows for this many ticks, to measure their size on disk.
AUDIT_SAMPLE_TICKS = 4
# Old enough that no used connection ever counts as idle, new enough to stay inside
# Atlassian's 365 days all day.
CONSENT_DAYS = (31.0, 364.0)
IDLE_REFRESHED_DAYS = (0.0, 30.0)
IDLE_LAST_USED_MIN_DAYS = 2.0
# Minutes since a warm connection's (or, before, any connection's) last refresh.
WARM_PHASE_MINUTES = (0.0, 45.0)
SEED = 20261201
CHUNK = 2000
LOCMEM_EMAIL = "django.core.mail.backends.locmem.EmailBackend"
EMULATED_REFRESHED = "refreshed (emulated)"


@dataclass(frozen=True)
class Policy:
    name: str
    rule: DueRule
    # 670ddb4 wrote an audit row per refresh and had no consent warnings.
    audit_row_per_refresh: bool
    consent_warnings: bool


BEFORE = Policy(
    "before", DueRule(warm_within=timedelta(days=36500)), audit_row_per_refresh=True, consent_warnings=False
)
AFTER = Policy("after", DueRule(), audit_row_per_refresh=False, consent_warnings=True)


@dataclass(frozen=True)
class Member:
    """One connection of the population, in days or minutes before the day starts."""

    used: bool
    consented_days: float
    refreshed_days: float  # idle, after: when the refresh token was last used
    phase_minutes: float  # when the last warm refresh was (used, or everyone before)
    last_used_days: float

    def fields(self, *, policy: Policy, start: datetime, lifetime: timedelta) -> dict[str, Any]:
        warm = self.used or policy is BEFORE
        issued = start - (timedelta(minutes=self.phase_minutes) if warm else timedelta(days=self.refreshed_days))
        consent_age = timedelta(days=self.consented_days)
        return {
            "tokens_issued_at": issued,
            "last_refreshed_at": issued,
            "access_token_expires_at": issued + lifetime,
            "first_consented_at": start - consent_age,
            "consent_warnings_sent": sum(1 for w in WARNINGS if consent_age >= timedelta(days=365) - w.ahead),
            "last_used_at": start - timedelta(days=self.last_used_days),
        }


def population(count: int, *, used_share: float = USED_SHARE) -> list[Member]:
    """The same `count` connections every time (a fixed seed); the used ones first."""
    rng = random.Random(SEED + count)
    used = max(1, round(count * used_share))
    members = []
    for n in range(count):
        consented = rng.uniform(*CONSENT_DAYS)
        is_used = n < used
        members.append(
            Member(
                used=is_used,
                consented_days=consented,
                refreshed_days=rng.uniform(*IDLE_REFRESHED_DAYS),
                phase_minutes=rng.uniform(*WARM_PHASE_MINUTES),
                last_used_days=1 / 24 if is_used else rng.uniform(IDLE_LAST_USED_MIN_DAYS, consented),
            )
        )
    return members


@dataclass
class DayCounts:
    """What one simulated or replayed day cost."""

    connections: int
    used: int
    scheduled: int = 0
    on_demand: int = 0
    # Token calls per connection: used and idle kept apart.
    per_connection: Counter[int] = field(default_factory=Counter)
    used_ids: frozenset[int] = frozenset()
    audit_rows: Counter[str] = field(default_factory=Counter)
    peak_tick: int = 0
    seconds: float = 0.0
    audit_bytes_per_row: float | None = None
    seed_seconds: float = 0.0

    @property
    def token_calls(self) -> int:
        return self.scheduled + self.on_demand

    @property
    def audit_total(self) -> int:
        return sum(self.audit_rows.values())

    def calls_of(self, *, used: bool) -> list[int]:
        ids = [pk for pk in self.per_connection if (pk in self.used_ids) == used]
        missing = (self.used if used else self.connections - self.used) - len(ids)
        return [self.per_connection[pk] for pk in ids] + [0] * missing

    def as_dict(self) -> dict[str, Any]:
        used, idle = self.calls_of(used=True), self.calls_of(used=False)
        return {
            "connections": self.connections,
            "used": self.used,
            "token_calls": self.token_calls,
            "scheduled": self.scheduled,
            "on_demand": self.on_demand,
            "token_calls_used": sum(used),
            "token_calls_idle": sum(idle),
            "per_used_connection": [min(used, default=0), max(used, default=0)],
            "per_idle_connection_max": max(idle, default=0),
            "audit_rows": dict(self.audit_rows),
            "peak_tick": self.peak_tick,
            "audit_bytes_per_row": self.audit_bytes_per_row,
            "seconds": round(self.seconds, 1),
            "seed_seconds": round(self.seed_seconds, 1),
        }


# --- Seeding ------------------------------------------------------------------------------


def _seed(
    members: Sequence[Member], *, policy: Policy, start: datetime, lifetime: timedelta, grants: Sequence[dict[str, Any]]
) -> tuple[list[int], list[int]]:
    """The population's rows; returns (all ids, used ids)."""
    owners = seed.users(len(members), prefix="cost-")
    rows = seed.connections(
        owners,
        grants,
        expires_at=None,
        fields=[m.fields(policy=policy, start=start, lifetime=lifetime) for m in members],
    )
    analyze(JiraConnection._meta.db_table)
    return [r.pk for r in rows], [r.pk for r, m in zip(rows, members, strict=True) if m.used]


def _events_by_kind() -> Counter[str]:
    return Counter(dict(ConnectionEvent.objects.values_list("kind").annotate(n=Count("pk"))))


# --- The simulation -----------------------------------------------------------------------


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for at in range(0, len(ids), CHUNK):
        yield ids[at : at + CHUNK]


def _store_refreshed(ids: Sequence[int], *, now: datetime, lifetime: timedelta, audit: bool) -> None:
    """What a successful refresh stores (lifecycle.refresh._store), tokens aside; and
    670ddb4's audit row for each when `audit` (the refresh token's rotation its detail)."""
    events = db_connection.ops.quote_name(ConnectionEvent._meta.db_table)
    connections = db_connection.ops.quote_name(JiraConnection._meta.db_table)
    message = f"Access token valid until {now + lifetime:%Y-%m-%d %H:%M:%S} UTC"
    for chunk in _chunks(ids):
        JiraConnection.objects.filter(pk__in=chunk).update(
            access_token_expires_at=now + lifetime,
            tokens_issued_at=now,
            last_refreshed_at=now,
            refresh_count=F("refresh_count") + 1,
            version=F("version") + 1,
            updated_at=now,
        )
        if audit:
            marks = ", ".join(["%s"] * len(chunk))
            with db_connection.cursor() as cursor:
                cursor.execute(
                    f"INSERT INTO {events} (connection_id, user_id, account_id, kind, actor, message, detail,"  # noqa: S608
                    f" created_at) SELECT id, user_id, account_id, %s, 'system', %s, '{{\"rotated\": true}}', %s"
                    f" FROM {connections} WHERE id IN ({marks})",
                    [EventKind.REFRESHED.value, message, now, *chunk],
                )


def _table_bytes(model: type[ConnectionEvent]) -> int | None:
    if db_connection.vendor != "postgresql":
        return None
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size(%s)", [model._meta.db_table])
        return int(cursor.fetchone()[0])


def simulate_day(members: Sequence[Member], *, policy: Policy, lifetime: timedelta) -> DayCounts:
    """The day at full size, refreshes emulated by bulk UPDATEs (module docstring)."""
    reset_data()
    started = time.monotonic()
    start = timezone.now().replace(microsecond=0)
    grants = seed.fake_grants(len(members), prefix="557058:cost-")
    ids, used_ids = _seed(members, policy=policy, start=start, lifetime=lifetime, grants=grants)
    day = DayCounts(connections=len(ids), used=len(used_ids), used_ids=frozenset(used_ids))
    day.seed_seconds = time.monotonic() - started
    events_before = _events_by_kind()
    bytes_before = _table_bytes(ConnectionEvent)
    started = time.monotonic()
    with override_settings(EMAIL_BACKEND=LOCMEM_EMAIL, ATLASSIAN_WEBHOOKS=False):
        for tick in range(TICKS):
            now = start + tick * TICK
            refreshed = 0
            audit = policy.audit_row_per_refresh and tick < AUDIT_SAMPLE_TICKS
            if tick % USE_EVERY == 0:
                stale = list(
                    JiraConnection.objects.filter(pk__in=used_ids).filter(expired(now=now)).values_list("pk", flat=True)
                )
                _store_refreshed(stale, now=now, lifetime=lifetime, audit=audit)
                day.on_demand += len(stale)
                day.per_connection.update(stale)
                refreshed += len(stale)
                JiraConnection.objects.filter(pk__in=used_ids).exclude(
                    last_used_at__gt=now - access.USE_RECORD_INTERVAL
                ).update(last_used_at=now)
            due = connections_due(now=now, rule=policy.rule)
            _store_refreshed(due, now=now, lifetime=lifetime, audit=audit)
            day.scheduled += len(due)
            day.per_connection.update(due)
            day.peak_tick = max(day.peak_tick, refreshed + len(due))
            if policy.consent_warnings:
                consent_warnings_send(now=now)
    day.seconds = time.monotonic() - started
    written = _events_by_kind() - events_before
    bytes_after = _table_bytes(ConnectionEvent)
    # Before's sample rows stand for the counted ones; after's would be the real code's own.
    sampled = written.pop(EventKind.REFRESHED, 0) if policy.audit_row_per_refresh else 0
    if bytes_before is not None and bytes_after is not None and sampled:
        day.audit_bytes_per_row = round((bytes_after - bytes_before) / sampled, 1)
    day.audit_rows = written
    if policy.audit_row_per_refresh:
        day.audit_rows[EMULATED_REFRESHED] = day.token_calls
    return day


# --- The validation: the same day through the real code -----------------------------------


@contextmanager
def _simulated_time(start: datetime) -> Iterator[FakeClock]:
    fake = FakeClock(start)
    with mock.patch.object(clock, "now", fake.now), mock.patch.object(clock, "sleep", fake.sleep):
        yield fake


def _call_jira(connection_ids: Sequence[int]) -> None:
    for user in User.objects.filter(jira_connections__pk__in=connection_ids):
        for site in access.jira_for(user):
            site.client.myself()


def replay_day(members: Sequence[Member], *, policy: Policy, control: SandboxClient) -> DayCounts:
    """The same day through refresh_due and jira_for against the sandbox."""
    reset_data()
    control.reset()
    lifetime = timedelta(seconds=control.config.access_ttl) - atlassian.EXPIRY_MARGIN
    grants = control.mint(len(members))
    start = timezone.now().replace(microsecond=0)
    ids, used_ids = _seed(members, policy=policy, start=start, lifetime=lifetime, grants=grants)
    sites = control.sites_of()
    JiraSite.objects.bulk_create(
        JiraSite(connection_id=pk, cloud_id=site["id"], url=site["url"], name=site["name"])
        for pk in used_ids
        for site in sites
    )
    account_of = dict(JiraConnection.objects.filter(pk__in=ids).values_list("account_id", "pk"))
    day = DayCounts(connections=len(ids), used=len(used_ids), used_ids=frozenset(used_ids))
    events_before = _events_by_kind()
    counters_before = control.counters()
    rule = policy.rule
    options = refresh_run.RunOptions(due_within=rule.due_within, max_idle=rule.max_idle, warm_within=rule.warm_within)
    started = time.monotonic()
    with (
        override_settings(EMAIL_BACKEND=LOCMEM_EMAIL, ATLASSIAN_WEBHOOKS=False),
        _simulated_time(start) as fake,
        on_demand_refreshes() as on_demand,
    ):
        for tick in range(TICKS):
            calls_before = control.counters()["refreshes"]
            if tick % USE_EVERY == 0:
                _call_jira(used_ids)
            summary = refresh_run.refresh_due(options)
            if summary.exit_code != 0:
                raise BenchError(f"refresh_tokens failed in the replayed day: {summary.as_dict()}")
            day.scheduled += summary.counts[RefreshOutcome.REFRESHED]
            day.peak_tick = max(day.peak_tick, control.counters()["refreshes"] - calls_before)
            fake.advance(seconds=TICK.total_seconds())
            control.advance(TICK.total_seconds())
    day.seconds = time.monotonic() - started
    day.on_demand = sum(on_demand.values())
    token_calls = control.counters()["refreshes"] - counters_before["refreshes"]
    if token_calls != day.token_calls:
        raise BenchError(f"the sandbox saw {token_calls} token calls, the runs and Jira calls {day.token_calls}")
    day.per_connection = Counter(
        {account_of[account]: n for account, n in control.refreshes_by_account().items() if account in account_of}
    )
    day.audit_rows = _events_by_kind() - events_before
    if not policy.consent_warnings:
        # Today's run sends them whatever the rule; 670ddb4 had none to send.
        del day.audit_rows[EventKind.CONSENT_EXPIRY_WARNED]
    if policy.audit_row_per_refresh:
        day.audit_rows[EMULATED_REFRESHED] = day.token_calls
    return day


# --- The report ---------------------------------------------------------------------------


def _rates(day: DayCounts) -> tuple[float, float]:
    """Token calls per used and per idle connection per day."""
    idle = day.connections - day.used
    return sum(day.calls_of(used=True)) / day.used, sum(day.calls_of(used=False)) / idle if idle else 0.0


def _compare(simulated: DayCounts, replayed: DayCounts) -> dict[str, Any]:
    fields = ("token_calls", "scheduled", "on_demand", "token_calls_used", "token_calls_idle")
    sim, real = simulated.as_dict(), replayed.as_dict()
    differences = {name: real[name] - sim[name] for name in fields}
    differences["audit_rows"] = replayed.audit_total - simulated.audit_total
    return {
        "connections": replayed.connections,
        "used": replayed.used,
        "simulated": sim,
        "replayed": real,
        "differences": differences,
        "same": not any(differences.values()),
    }


def measure(
    *,
    control: SandboxClient,
    connections: int = CONNECTIONS,
    validate_after: int = VALIDATE_AFTER,
    validate_before: int = VALIDATE_BEFORE,
    projected: int = PROJECTED,
) -> Outcome:
    """Needs the portal's ATLASSIAN_*_URL pointed at the sandbox behind `control`."""
    lifetime = timedelta(seconds=control.config.access_ttl) - atlassian.EXPIRY_MARGIN
    members = population(connections)
    days = {policy.name: simulate_day(members, policy=policy, lifetime=lifetime) for policy in (BEFORE, AFTER)}
    checks = {}
    for policy, size in ((AFTER, validate_after), (BEFORE, validate_before)):
        small = population(size)
        simulated = simulate_day(small, policy=policy, lifetime=lifetime)
        checks[policy.name] = _compare(simulated, replay_day(small, policy=policy, control=control))
    reset_data()

    before, after = days["before"], days["after"]
    scale = projected / connections
    used_projected = round(projected * USED_SHARE)
    rate_used, rate_idle = _rates(after)
    (rate_before, _) = _rates(before)
    projected_calls = {
        "before": rate_before * projected,
        "after": rate_used * used_projected + rate_idle * (projected - used_projected),
    }
    routine_after = after.audit_rows[EventKind.REFRESHED]
    audit_year = {name: day.audit_total * scale * 365 for name, day in days.items()}
    per_row = before.audit_bytes_per_row
    idle_max = max(after.calls_of(used=False), default=0)
    used_range = after.calls_of(used=True)
    ratio_calls = after.token_calls / before.token_calls
    ratio_audit = after.audit_total / before.audit_total
    warnings = after.audit_rows[EventKind.CONSENT_EXPIRY_WARNED]
    n, u = f"{connections:,}", f"{after.used:,}"

    outcome = Outcome("cost")
    outcome.rows = [
        Row(
            f"token calls a day, {n} connections ({u} used)",
            f"{before.token_calls:,} before, {after.token_calls:,} after = {ratio_calls:.3f}x",
        ),
        Row(
            "  after: per used connection / per idle connection",
            f"{min(used_range)}-{max(used_range)} / {rate_idle:.3f} (max {idle_max})",
            "idle ≤ 1",
            idle_max <= 1,
        ),
        Row(
            f"audit rows a day, {n} connections",
            f"{before.audit_total:,} before, {after.audit_total:,} after = {ratio_audit:.4f}x",
        ),
        Row(
            "  after: routine refreshes / consent warnings",
            f"{routine_after} / {warnings}",
            "routine 0",
            routine_after == 0,
        ),
        Row(
            f"projected to {projected:,}: token calls a day",
            f"{projected_calls['before']:,.0f} before, {projected_calls['after']:,.0f} after",
        ),
        Row(
            "  refreshes/s sustained (peak 15-min tick)",
            f"{projected_calls['before'] / 86400:.1f} ({before.peak_tick * scale / TICK.total_seconds():.1f}) before,"
            f" {projected_calls['after'] / 86400:.2f} ({after.peak_tick * scale / TICK.total_seconds():.2f}) after",
        ),
        Row(
            "  audit rows a year",
            f"{audit_year['before']:,.0f} before"
            + (f" ({audit_year['before'] * per_row / 1e9:,.0f} GB)" if per_row else "")
            + f", {audit_year['after']:,.0f} after",
        ),
    ]
    for name, check in checks.items():
        diff = check["differences"]
        outcome.rows.append(
            Row(
                f"real code = simulation, {name}, {check['connections']:,} connections ({check['used']} used)",
                f"{check['replayed']['token_calls']:,} token calls (Δ {diff['token_calls']}),"
                f" {sum(check['replayed']['audit_rows'].values()):,} audit rows (Δ {diff['audit_rows']})",
                "Δ 0",
                check["same"],
            )
        )
    outcome.data = {
        "connections": connections,
        "used_share": USED_SHARE,
        "ticks": TICKS,
        "tick_minutes": TICK.total_seconds() / 60,
        "access_token_lifetime_seconds": lifetime.total_seconds(),
        "days": {name: day.as_dict() for name, day in days.items()},
        "ratio_token_calls": round(ratio_calls, 4),
        "ratio_audit_rows": round(ratio_audit, 5),
        "rates_per_connection_day": {
            "before": round(rate_before, 3),
            "after_used": round(rate_used, 3),
            "after_idle": round(rate_idle, 4),
        },
        "projected": {
            "connections": projected,
            "used": used_projected,
            "formula": "after = used * r_used + (N - used) * r_idle; before = N * r_before (rates measured above)",
            "token_calls_per_day": {k: round(v) for k, v in projected_calls.items()},
            "refreshes_per_second": {k: round(v / 86400, 2) for k, v in projected_calls.items()},
            "peak_tick_refreshes_per_second": {
                name: round(day.peak_tick * scale / TICK.total_seconds(), 2) for name, day in days.items()
            },
            "audit_rows_per_year": {k: round(v) for k, v in audit_year.items()},
            "audit_bytes_per_row": per_row,
        },
        "validation": checks,
    }
    return outcome
