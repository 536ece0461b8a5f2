"""The scheduled run: what `manage.py refresh_tokens` does.

Finds the due connections (lifecycle.due: warm, keep-alive, retry), refreshes each
through the single-flight path (lifecycle.refresh) on a pool of worker threads, and
counts the outcomes; then sends consent-expiry warnings (lifecycle.consent), prunes
old audit events (lifecycle.events), keeps Jira webhooks alive (lifecycle.webhooks) and
prunes received Jira events (lifecycle.deliveries). Any number of these runs may overlap, in threads,
processes or hosts: the claim keeps each connection's refresh to one worker.

On PostgreSQL the run claims due connections in batches (refresh.BatchClaimer, SKIP
LOCKED), as many at a time as it has idle workers, so overlapping runs split the due
set; the claim reads the claimed rows too. On SQLite it reads the due list and claims
each connection as a worker reaches it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import connection, connections

from integrations import clock
from integrations.lifecycle.config import ConfigurationError, configuration_problem
from integrations.lifecycle.consent import consent_warnings_send
from integrations.lifecycle.deliveries import jira_events_prune
from integrations.lifecycle.due import (
    DEFAULT_DUE_WITHIN,
    DEFAULT_MAX_IDLE,
    DEFAULT_WARM_WITHIN,
    DueRule,
    connections_due,
)
from integrations.lifecycle.events import events_prune
from integrations.lifecycle.refresh import (
    BatchClaimer,
    ClaimedRow,
    RefreshOutcome,
    RefreshResult,
    connection_refresh_claimed,
    connection_refresh_if_due,
    connection_release,
)
from integrations.lifecycle.webhooks import WebhookCounts, webhooks_maintain
from integrations.models import JiraConnection
from monitoring.recorder import run_completed

logger = logging.getLogger(__name__)

# Called as progress(done, total) from worker threads, one call at a time.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RunOptions:
    due_within: timedelta = DEFAULT_DUE_WITHIN
    max_idle: timedelta = DEFAULT_MAX_IDLE
    warm_within: timedelta = DEFAULT_WARM_WITHIN
    # 32: the fastest setting measured that still reaches half its bound
    # (docs/benchmarks.md). Workers share the process's few pooled database connections,
    # holding one only while they read or write.
    concurrency: int = 32
    limit: int | None = None
    user_email: str | None = None
    ignore_backoff: bool = False

    @property
    def rule(self) -> DueRule:
        return DueRule(
            due_within=self.due_within,
            max_idle=self.max_idle,
            warm_within=self.warm_within,
            ignore_backoff=self.ignore_backoff,
        )


@dataclass
class RunSummary:
    due: int = 0
    counts: Counter[RefreshOutcome] = field(default_factory=Counter)
    # Due but never attempted: the run stopped on a configuration error first.
    skipped: int = 0
    # Unexpected exceptions (a bug, the database gone): counted as transient.
    errors: int = 0
    configuration_error: str | None = None
    # Consent-expiry warnings emailed and old audit events deleted by this run.
    warnings_sent: int = 0
    events_pruned: int = 0
    # Jira webhooks kept alive by this run (lifecycle.webhooks), received events pruned.
    webhooks: WebhookCounts = field(default_factory=WebhookCounts)
    jira_events_pruned: int = 0
    elapsed: float = 0.0
    # Batch claim statements sent (PostgreSQL); 0 where each connection is claimed alone.
    claim_statements: int = 0

    @property
    def wasted_claims(self) -> int:
        """Claims that got nothing because another worker had the connection, or had just
        refreshed it. Batch claims skip such rows without trying them: none there."""
        return self.counts[RefreshOutcome.CLAIMED_ELSEWHERE] + self.counts[RefreshOutcome.NOT_DUE]

    @property
    def transient_failures(self) -> int:
        return self.counts[RefreshOutcome.TRANSIENT_FAILURE] + self.errors

    @property
    def rate(self) -> float:
        done = sum(self.counts.values()) + self.errors
        return done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.configuration_error is not None:
            return 2
        return 1 if self.transient_failures else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "due": self.due,
            "refreshed": self.counts[RefreshOutcome.REFRESHED],
            "not_due": self.counts[RefreshOutcome.NOT_DUE],
            "claimed_elsewhere": self.counts[RefreshOutcome.CLAIMED_ELSEWHERE],
            "superseded": self.counts[RefreshOutcome.SUPERSEDED],
            "transient_failures": self.transient_failures,
            "needs_reconnect": self.counts[RefreshOutcome.NEEDS_RECONNECT],
            "gone": self.counts[RefreshOutcome.GONE],
            "skipped": self.skipped,
            "wasted_claims": self.wasted_claims,
            "claim_statements": self.claim_statements,
            "errors": self.errors,
            "warnings_sent": self.warnings_sent,
            "events_pruned": self.events_pruned,
            **{f"webhooks_{name}": value for name, value in self.webhooks.as_dict().items()},
            "jira_events_pruned": self.jira_events_pruned,
            "configuration_error": self.configuration_error,
            "elapsed_seconds": round(self.elapsed, 3),
            "rate_per_second": round(self.rate, 2),
        }


@dataclass(frozen=True)
class DueConnection:
    connection_id: int
    user_email: str
    access_token_expires_at: datetime | None
    reason: str


def _due_ids(options: RunOptions, *, now: datetime) -> list[int]:
    return connections_due(
        now=now,
        rule=options.rule,
        limit=options.limit,
        user_email=options.user_email,
        ignore_backoff=options.ignore_backoff,
    )


def due_preview(options: RunOptions) -> list[DueConnection]:
    """What a run would refresh, soonest first, without changing (or decrypting) anything."""
    now = clock.now()
    ids = _due_ids(options, now=now)
    rows = {
        row["pk"]: row
        for row in JiraConnection.objects.filter(pk__in=ids).values(
            "pk",
            "user__email",
            "status",
            "access_token_expires_at",
            "tokens_issued_at",
            "last_used_at",
            "next_attempt_at",
        )
    }
    rule = options.rule
    return [
        DueConnection(
            connection_id=pk,
            user_email=rows[pk]["user__email"],
            access_token_expires_at=rows[pk]["access_token_expires_at"],
            reason=rule.reason(
                status=rows[pk]["status"],
                expires_at=rows[pk]["access_token_expires_at"],
                tokens_issued_at=rows[pk]["tokens_issued_at"],
                last_used_at=rows[pk]["last_used_at"],
                next_attempt_at=rows[pk]["next_attempt_at"],
                now=now,
            )
            or "due",
        )
        for pk in ids
        if pk in rows
    ]


class _Run:
    """What both kinds of run share: the counts, the progress calls and the stop switch."""

    def __init__(self, *, options: RunOptions, progress: Progress | None, due: int) -> None:
        self.options = options
        self.summary = RunSummary(due=due)
        self.progress = progress
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.done = 0
        self.total = due

    def _record(self, outcome: RefreshOutcome | None) -> None:
        with self.lock:
            if outcome is None:
                self.summary.errors += 1
            else:
                self.summary.counts[outcome] += 1
            self.done += 1
            if self.progress is not None:
                self.progress(self.done, max(self.total, self.done))

    def _skip(self) -> None:
        with self.lock:
            self.summary.skipped += 1

    def _attempt(self, connection_id: int, refresh: Callable[[], RefreshResult]) -> None:
        try:
            result = refresh()
        except ConfigurationError as exc:
            # Every other connection would be refused the same way: stop taking work.
            self.stop.set()
            with self.lock:
                self.summary.configuration_error = self.summary.configuration_error or str(exc)
            self._skip()
            return
        except Exception:
            # One connection's bug must not end the batch; its claim lapses by itself.
            logger.exception("Refreshing connection %s failed unexpectedly.", connection_id)
            self._record(None)
            return
        self._record(result.outcome)

    def work(self) -> None:
        """One worker thread's whole life."""
        try:
            self._work()
        finally:
            # Threads outlive nothing here: close this thread's connections ourselves,
            # or each worker leaves one open on the server (or checked out of the pool).
            if threading.current_thread() is not threading.main_thread():
                connections.close_all()

    def _work(self) -> None:
        raise NotImplementedError

    def run(self, *, workers: int) -> RunSummary:
        raise NotImplementedError


class _ListRun(_Run):
    """SQLite: the due list read once, each connection claimed as a worker reaches it."""

    def __init__(self, ids: list[int], *, options: RunOptions, progress: Progress | None) -> None:
        super().__init__(options=options, progress=progress, due=len(ids))
        self.pending: queue.SimpleQueue[int] = queue.SimpleQueue()
        for pk in ids:
            self.pending.put(pk)

    def _work(self) -> None:
        while not self.stop.is_set():
            try:
                connection_id = self.pending.get_nowait()
            except queue.Empty:
                return
            self._attempt(
                connection_id,
                partial(
                    connection_refresh_if_due,
                    connection_id=connection_id,
                    rule=self.options.rule,
                    ignore_backoff=self.options.ignore_backoff,
                ),
            )

    def run(self, *, workers: int) -> RunSummary:
        workers = min(workers, self.total)
        if workers <= 1:
            self.work()
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="refresh") as pool:
                for future in [pool.submit(self.work) for _ in range(workers)]:
                    future.result()
        # Ids never taken because the run stopped early.
        while True:
            try:
                self.pending.get_nowait()
            except queue.Empty:
                break
            self.summary.skipped += 1
        return self.summary


def _housekeeping(summary: RunSummary) -> None:
    """What every scheduled run also does: warn of consent expiry, prune the audit trail,
    keep Jira webhooks registered and extended, prune received events, write its
    monitoring counts and record that it ran (last). All idempotent and safe when runs
    overlap."""
    now = clock.now()
    summary.warnings_sent = consent_warnings_send(now=now)
    summary.events_pruned = events_prune(now=now)
    summary.webhooks = webhooks_maintain(now=now)
    summary.jira_events_pruned = jira_events_prune(now=now)
    run_completed(now=clock.now())


class _ClaimingRun(_Run):
    """PostgreSQL: this thread claims due connections in batches of as many as there are
    idle workers, so a claimed row starts at once and its lease cannot lapse in a queue;
    the workers refresh what it claimed. Runs that overlap split the due set between them."""

    def __init__(self, *, options: RunOptions, progress: Progress | None, due_estimate: int) -> None:
        super().__init__(options=options, progress=progress, due=0)
        self.total = due_estimate
        self.claimed: queue.SimpleQueue[tuple[ClaimedRow, uuid.UUID] | None] = queue.SimpleQueue()
        self.busy = 0
        self.idle_worker = threading.Condition(self.lock)

    def _work(self) -> None:
        while (item := self.claimed.get()) is not None:
            self._take(*item)

    def _take(self, row: ClaimedRow, claim: uuid.UUID) -> None:
        try:
            if self.stop.is_set():
                # Claimed but never started: free it now rather than in 2 minutes.
                connection_release(connection_id=row.connection_id, claim=claim)
            else:
                self._attempt(row.connection_id, partial(connection_refresh_claimed, row=row, claim=claim))
        finally:
            with self.idle_worker:
                self.busy -= 1
                self.idle_worker.notify()

    def _room(self, workers: int) -> int:
        """Wait for an idle worker; how many there are (0: the run is stopping)."""
        with self.idle_worker:
            while self.busy >= workers and not self.stop.is_set():
                self.idle_worker.wait()
            if self.stop.is_set():
                return 0
            room = workers - self.busy
            if self.options.limit is not None:
                room = min(room, self.options.limit - self.summary.due)
            return max(room, 0)

    def _feed_safely(self, workers: int, *, inline: bool) -> None:
        try:
            self._feed(workers, inline=inline)
        except Exception:
            # The database went away mid-run: finish what is claimed; cron runs again.
            logger.exception("Claiming due connections failed; finishing the claimed ones.")
            with self.lock:
                self.summary.errors += 1

    def _feed(self, workers: int, *, inline: bool) -> None:
        options = self.options
        branches = list(range(len(options.rule.branches(now=clock.now()))))
        claimer = BatchClaimer(rule=options.rule, ignore_backoff=options.ignore_backoff, user_email=options.user_email)
        while branches and (size := self._room(workers)):
            claim = uuid.uuid4()
            rows = claimer.claim(branch=branches[0], size=size, claim=claim)
            with self.lock:
                self.summary.claim_statements += 1
                self.summary.due += len(rows)
                self.busy += len(rows)
            if not rows:
                # Nothing due and free left in this branch: what the other runs hold is theirs.
                branches.pop(0)
            for row in rows:
                if inline:
                    self._take(row, claim)
                else:
                    self.claimed.put((row, claim))

    def run(self, *, workers: int) -> RunSummary:
        if workers == 1:
            # Claim one, refresh it, in this thread: no thread to hand it to.
            self._feed_safely(1, inline=True)
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="refresh") as pool:
                futures = [pool.submit(self.work) for _ in range(workers)]
                try:
                    self._feed_safely(workers, inline=False)
                finally:
                    for _ in futures:
                        self.claimed.put(None)
                for future in futures:
                    future.result()
        if self.stop.is_set():
            # As on SQLite: every connection left due counts as skipped, claimed or not
            # (a claimed one never started was released above).
            left = len(_due_ids(self.options, now=clock.now()))
            if self.options.limit is not None:
                left = min(left, self.options.limit - self.done)
            self.summary.skipped = left
            self.summary.due = self.done + left
        return self.summary


def refresh_due(options: RunOptions, *, progress: Progress | None = None) -> RunSummary:
    """Refresh every due connection with `options.concurrency` workers and count outcomes.

    Stops taking new work at the first ConfigurationError (Atlassian refused our client
    credentials); the summary then carries the cause and exit_code 2.
    """
    started = time.monotonic()
    problem = configuration_problem()
    if problem is not None:
        return RunSummary(configuration_error=problem)
    run: _Run
    if connection.vendor == "postgresql":
        # The due list is only read for the progress line: the claims find the work.
        estimate = len(_due_ids(options, now=clock.now())) if progress is not None else 0
        run = _ClaimingRun(options=options, progress=progress, due_estimate=estimate)
    else:
        run = _ListRun(_due_ids(options, now=clock.now()), options=options, progress=progress)
    summary = run.run(workers=max(1, options.concurrency))
    if summary.configuration_error is None:
        _housekeeping(summary)
    summary.elapsed = time.monotonic() - started
    logger.info("refresh_tokens: %s", summary.as_dict())
    return summary
