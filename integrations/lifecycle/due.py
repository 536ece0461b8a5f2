"""The one rule for when a connection's tokens need renewing: as a query (`filter`,
`connections_due`) and as a predicate that says why (`reason`: None when not due),
which the dry run and the admin show.

A connection is due when its access token expires within `due_within` (or has no
known expiry), or when its refresh token has gone unused for `max_idle` (Atlassian
drops a refresh token after 90 idle days). Connections that need reconnecting are
never due: only their user can bring them back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Q

from integrations.models import ConnectionStatus, JiraConnection

DEFAULT_DUE_WITHIN = timedelta(minutes=15)
DEFAULT_MAX_IDLE = timedelta(days=30)


@dataclass(frozen=True)
class DueRule:
    due_within: timedelta = DEFAULT_DUE_WITHIN
    max_idle: timedelta = DEFAULT_MAX_IDLE

    def branches(self, *, now: datetime) -> list[Q]:
        # Each branch is a range on one partial index (conn_due_expiry_idx, conn_due_idle_idx).
        return [
            Q(access_token_expires_at__lte=now + self.due_within),
            Q(access_token_expires_at__isnull=True),
            Q(tokens_issued_at__lte=now - self.max_idle),
        ]

    def filter(self, *, now: datetime) -> Q:
        """Due, whatever the backoff says."""
        due = Q()
        for branch in self.branches(now=now):
            due |= branch
        return ~Q(status=ConnectionStatus.NEEDS_RECONNECT) & due

    def reason(
        self, *, status: str, expires_at: datetime | None, tokens_issued_at: datetime, now: datetime
    ) -> str | None:
        """Why a connection with these values is due, or None when it is not."""
        if status == ConnectionStatus.NEEDS_RECONNECT:
            return None
        if expires_at is None:
            return "no expiry stored"
        if expires_at <= now:
            return "expired"
        if expires_at <= now + self.due_within:
            return f"expires within {self.due_within}"
        if tokens_issued_at <= now - self.max_idle:
            return f"idle {(now - tokens_issued_at).days} days (refresh token unused)"
        return None


DEFAULT_RULE = DueRule()


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
