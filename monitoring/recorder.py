"""Per-day counters, buffered in each process and written with one upsert per flush.

Refreshes happen by the thousand in a scheduled run and one at a time in web requests;
neither may cost a write per event. Each process adds to an in-memory buffer keyed by
(day, kind, outcome, reason, source); a flush writes the whole buffer with one
`INSERT … ON CONFLICT … DO UPDATE SET value = value + excluded.value` (Django's
bulk_create(update_conflicts=True) can only overwrite a column, not add to it), which
SQLite and PostgreSQL both speak.

When a flush happens:
- the scheduled run: whenever its oldest buffered count is MONITORING_FLUSH_SECONDS old,
  and once at the end (run_completed, from the run's housekeeping);
- web workers: at the end of a request (after the response went out) once the oldest
  buffered count is MONITORING_FLUSH_SECONDS old, so a busy worker writes about once a
  minute whatever its traffic, and no user's request waits for it. A worker that dies
  loses at most that long of counts; gunicorn's worker_exit hook flushes the rest.

Every count is also added to a LIFETIME row that is never pruned: the Prometheus
counters are read from those, so they cover every process on every host and only grow.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction

from integrations import clock
from monitoring.models import LATENCY_BUCKETS, LATENCY_SUM, REFRESH_RUN, DailyCount, Kind, RunHeartbeat

logger = logging.getLogger(__name__)

# The day of the never-pruned running totals (no real count is dated 1970).
LIFETIME = date(1970, 1, 1)
# Rows per INSERT: 6 parameters each stays under SQLite's oldest limit of 999.
UPSERT_ROWS = 150

Key = tuple[date, str, str, str, str]


class _Buffer:
    """One process's counts not yet written, shared by its threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[Key] = Counter()
        self._oldest: datetime | None = None

    def add(self, *, day: date, kind: str, outcome: str, reason: str, source: str, value: int, now: datetime) -> None:
        fields = (kind, outcome[:64], reason[:64], source[:128])
        with self._lock:
            self._counts[(day, *fields)] += value
            self._counts[(LIFETIME, *fields)] += value
            if self._oldest is None:
                self._oldest = now

    def due(self, *, now: datetime) -> bool:
        interval = timedelta(seconds=settings.MONITORING_FLUSH_SECONDS)
        with self._lock:
            return self._oldest is not None and now - self._oldest >= interval

    def take(self) -> Counter[Key]:
        with self._lock:
            taken, self._counts, self._oldest = self._counts, Counter(), None
        return taken

    def give_back(self, counts: Counter[Key], *, since: datetime) -> None:
        with self._lock:
            self._counts.update(counts)
            self._oldest = since if self._oldest is None else min(self._oldest, since)

    def snapshot(self) -> dict[Key, int]:
        with self._lock:
            return dict(self._counts)


_buffer = _Buffer()


def count_event(*, kind: Kind, outcome: str, reason: str = "", source: str = "", value: int = 1) -> None:
    """Add `value` events to today's counter of `kind` (and the lifetime total)."""
    now = clock.now()
    _buffer.add(day=now.date(), kind=kind, outcome=outcome, reason=reason, source=source, value=value, now=now)


def latency_bucket(seconds: float) -> str:
    """The label of the histogram bucket a duration falls in (its upper bound)."""
    for bound in LATENCY_BUCKETS:
        if seconds <= bound:
            return str(bound)
    return "+Inf"


def token_latency_add(*, seconds: float, source: str) -> None:
    count_event(kind=Kind.TOKEN_LATENCY, outcome=latency_bucket(seconds), source=source)
    count_event(kind=Kind.TOKEN_LATENCY, outcome=LATENCY_SUM, source=source, value=round(seconds * 1000))


def pending() -> dict[Key, int]:
    """The counts this process has not written yet."""
    return _buffer.snapshot()


def _upsert(counts: Counter[Key]) -> None:
    table = connection.ops.quote_name(DailyCount._meta.db_table)
    columns = ("day", "kind", "outcome", "reason", "source", "value")
    quoted = ", ".join(connection.ops.quote_name(column) for column in columns)
    key = ", ".join(connection.ops.quote_name(column) for column in columns[:-1])
    value = connection.ops.quote_name("value")
    rows = [(*k, n) for k, n in counts.items() if n]
    with transaction.atomic(), connection.cursor() as cursor:
        for start in range(0, len(rows), UPSERT_ROWS):
            chunk = rows[start : start + UPSERT_ROWS]
            placeholders = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(chunk))
            params: list[Any] = [item for row in chunk for item in row]
            cursor.execute(
                f"INSERT INTO {table} ({quoted}) VALUES {placeholders} "  # noqa: S608 (names are ours, values bound)
                f"ON CONFLICT ({key}) DO UPDATE SET {value} = {table}.{value} + excluded.{value}",
                params,
            )


def flush() -> int:
    """Write every buffered count in one upsert; returns how many keys were written.
    A failed write keeps the counts for the next flush: a database blip loses none."""
    now = clock.now()
    taken = _buffer.take()
    if not taken:
        return 0
    try:
        _upsert(taken)
    except DatabaseError:
        logger.warning("Monitoring counts not written (database error); kept for the next flush.", exc_info=True)
        _buffer.give_back(taken, since=now)
        return 0
    return len(taken)


def flush_if_due() -> int:
    """Flush when the oldest buffered count has waited MONITORING_FLUSH_SECONDS."""
    return flush() if _buffer.due(now=clock.now()) else 0


def flush_if_due_on_request_end(sender: Any, **kwargs: Any) -> None:
    flush_if_due()


def run_completed(*, now: datetime) -> int:
    """The scheduled run's housekeeping: write its counts, prune days older than
    MONITORING_RETENTION_DAYS, and record that the run finished (last of all, so a run
    that failed before here leaves the heartbeat where it was). Returns rows pruned."""
    flush()
    cutoff = now.date() - timedelta(days=settings.MONITORING_RETENTION_DAYS)
    pruned, _ = DailyCount.objects.filter(day__lt=cutoff).exclude(day=LIFETIME).delete()
    _heartbeat(now=now)
    return pruned


def _heartbeat(*, now: datetime) -> None:
    # An UPDATE first, not update_or_create: runs that end together on SQLite would each
    # open a read transaction and then fail to upgrade it ("database is locked").
    if RunHeartbeat.objects.filter(name=REFRESH_RUN).update(last_success_at=now):
        return
    try:
        with transaction.atomic():
            RunHeartbeat.objects.create(name=REFRESH_RUN, last_success_at=now)
    except IntegrityError:
        RunHeartbeat.objects.filter(name=REFRESH_RUN).update(last_success_at=now)


def refresh_last_success() -> datetime | None:
    """When the scheduled run last finished, or None if it never has."""
    row = RunHeartbeat.objects.filter(name=REFRESH_RUN).values_list("last_success_at", flat=True).first()
    return row
