"""The one rule for when the scheduled run renews a connection's tokens: as a query
(`filter`, `connections_due`) and as a predicate that says why (`reason`: None when not
due), which the dry run and the admin show.

Cost follows use. The run refreshes a connection when it is
- **warm**: used for a Jira call within `warm_within` (24 h) and its access token expires
  within `due_within` (15 min), so people who use the portal never wait for a refresh;
- **keep-alive**: its refresh token has gone unused for `max_idle` (30 days), so none
  reaches Atlassian's 90-day inactivity limit;
- **retry**: its last refresh failed and its backoff has ended.
Everything else is refreshed on demand, when a Jira call finds its token expired
(`expired`, the access path's condition). Connections that need reconnecting are never
due: only their user can bring them back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Q

from integrations.models import ConnectionStatus, JiraConnection

DEFAULT_DUE_WITHIN = timedelta(minutes=15)
DEFAULT_MAX_IDLE = timedelta(days=30)
DEFAULT_WARM_WITHIN = timedelta(hours=24)


@dataclass(frozen=True)
class DueRule:
    due_within: timedelta = DEFAULT_DUE_WITHIN
    max_idle: timedelta = DEFAULT_MAX_IDLE
    warm_within: timedelta = DEFAULT_WARM_WITHIN
    # Operators can retry failing connections at once (refresh_tokens --ignore-backoff).
    ignore_backoff: bool = False

    def branches(self, *, now: datetime) -> list[Q]:
        # Each branch is a range on one partial index: conn_due_warm_idx,
        # conn_due_idle_idx, conn_due_retry_idx.
        retry = Q(status=ConnectionStatus.REFRESH_FAILING)
        return [
            Q(last_used_at__gte=now - self.warm_within, access_token_expires_at__lte=now + self.due_within),
            Q(tokens_issued_at__lte=now - self.max_idle),
            retry if self.ignore_backoff else retry & Q(next_attempt_at__lte=now),
        ]

    # What each branch's batch claim is ordered by, most urgent first: soonest expiry,
    # longest idle, longest failing. Each is a column of the branch's partial index, and no
    # other index leads with it (tests/integrations/test_due_query_plan.py): an index on the
    # expiry alone let PostgreSQL order the warm claim by walking every idle connection.
    CLAIM_ORDER = ("access_token_expires_at", "tokens_issued_at", "next_attempt_at")

    def filter(self, *, now: datetime) -> Q:
        """Due; a warm or idle connection still waits out a backoff (`not_backing_off`)."""
        due = Q()
        for branch in self.branches(now=now):
            due |= branch
        return ~Q(status=ConnectionStatus.NEEDS_RECONNECT) & due

    def reason(
        self,
        *,
        status: str,
        expires_at: datetime | None,
        tokens_issued_at: datetime,
        last_used_at: datetime | None,
        next_attempt_at: datetime | None,
        now: datetime,
    ) -> str | None:
        """Why a connection with these values is due, or None when it is not."""
        if status == ConnectionStatus.NEEDS_RECONNECT:
            return None
        if not self.ignore_backoff and next_attempt_at is not None and next_attempt_at > now:
            return None
        if status == ConnectionStatus.REFRESH_FAILING:
            return "retry: the last refresh failed, its backoff has ended"
        if tokens_issued_at <= now - self.max_idle:
            return f"keep-alive: refresh token unused for {(now - tokens_issued_at).days} days"
        warm = last_used_at is not None and last_used_at >= now - self.warm_within
        if warm and expires_at is not None and expires_at <= now + self.due_within:
            assert last_used_at is not None
            used = _ago(now - last_used_at)
            return f"warm: used {used} ago, access token {'expired' if expires_at <= now else 'expires soon'}"
        return None


def _ago(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    minutes = max(0, minutes)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h"


DEFAULT_RULE = DueRule()


def expired(*, now: datetime) -> Q:
    """The access path's condition: the stored token has expired (or has no expiry)."""
    return ~Q(status=ConnectionStatus.NEEDS_RECONNECT) & (
        Q(access_token_expires_at__lte=now) | Q(access_token_expires_at__isnull=True)
    )


def not_backing_off(*, now: datetime) -> Q:
    return Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)


def connections_due(
    *,
    now: datetime,
    rule: DueRule = DEFAULT_RULE,
    limit: int | None = None,
    user_email: str | None = None,
    ignore_backoff: bool = False,
) -> list[int]:
    """Ids of connections to refresh, soonest expiry first (no tokens decrypted).

    One UNION of index range scans, one per due condition: an OR of them lets SQLite's
    planner walk a whole index, a cost that grows with the table instead of the due rows.
    """
    rows = JiraConnection.objects.filter(~Q(status=ConnectionStatus.NEEDS_RECONNECT))
    if not ignore_backoff:
        rows = rows.filter(not_backing_off(now=now))
    if user_email:
        rows = rows.filter(user__email__iexact=user_email.strip())
    first, *others = (
        rows.filter(branch).values_list("pk", "access_token_expires_at") for branch in rule.branches(now=now)
    )
    found: list[tuple[int, datetime | None]] = list(first.union(*others))
    found.sort(key=lambda row: (row[1] is not None, row[1] or now, row[0]))
    ids = [pk for pk, _ in found]
    return ids[:limit] if limit else ids
