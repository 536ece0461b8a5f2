"""The scheduled run: what `manage.py refresh_tokens` does.

Finds the due connections (lifecycle.due: warm, keep-alive, retry), refreshes each
through the single-flight path (lifecycle.refresh) on a pool of worker threads, and
counts the outcomes; then sends consent-expiry warnings (lifecycle.consent), prunes
old audit events (lifecycle.events), keeps Jira webhooks alive (lifecycle.webhooks) and
prunes received Jira events (lifecycle.deliveries). Any number of these runs may overlap, in threads,
processes or hosts: the claim keeps each connection's refresh to one worker.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connections

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
from integrations.lifecycle.refresh import RefreshOutcome, connection_refresh_if_due
from integrations.lifecycle.webhooks import WebhookCounts, webhooks_maintain
from integrations.models import JiraConnection

logger = logging.getLogger(__name__)

# Called as progress(done, total) from worker threads, one call at a time.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RunOptions:
    due_within: timedelta = DEFAULT_DUE_WITHIN
    max_idle: timedelta = DEFAULT_MAX_IDLE
    warm_within: timedelta = DEFAULT_WARM_WITHIN
    # 32: the fastest setting measured that still reaches half its bound
    # (docs/benchmarks.md); each worker holds one database connection.
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


class _Batch:
    """The run's shared state: a queue of ids, the counts, and the stop switch."""

    def __init__(self, ids: list[int], *, options: RunOptions, progress: Progress | None) -> None:
        self.options = options
        self.pending: queue.SimpleQueue[int] = queue.SimpleQueue()
        for pk in ids:
            self.pending.put(pk)
        self.total = len(ids)
        self.summary = RunSummary(due=len(ids))
        self.progress = progress
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.done = 0

    def _record(self, outcome: RefreshOutcome | None) -> None:
        with self.lock:
            if outcome is None:
                self.summary.errors += 1
            else:
                self.summary.counts[outcome] += 1
            self.done += 1
            if self.progress is not None:
                self.progress(self.done, self.total)

    def _refresh_one(self, connection_id: int) -> None:
        try:
            result = connection_refresh_if_due(
                connection_id=connection_id, rule=self.options.rule, ignore_backoff=self.options.ignore_backoff
            )
        except ConfigurationError as exc:
            # Every other connection would be refused the same way: stop taking work.
            self.stop.set()
            with self.lock:
                self.summary.configuration_error = self.summary.configuration_error or str(exc)
                self.summary.skipped += 1
            return
        except Exception:
            # One connection's bug must not end the batch; its claim lapses by itself.
            logger.exception("Refreshing connection %s failed unexpectedly.", connection_id)
            self._record(None)
            return
        self._record(result.outcome)

    def work(self) -> None:
        """One worker: take ids until none are left or the run stops."""
        try:
            while not self.stop.is_set():
                try:
                    connection_id = self.pending.get_nowait()
                except queue.Empty:
                    return
                self._refresh_one(connection_id)
        finally:
            # Threads outlive nothing here: close this thread's connections ourselves,
            # or each worker leaves one open on the server.
            if threading.current_thread() is not threading.main_thread():
                connections.close_all()

    def finish(self) -> RunSummary:
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
    keep Jira webhooks registered and extended, prune received events. All idempotent
    and safe when runs overlap."""
    now = clock.now()
    summary.warnings_sent = consent_warnings_send(now=now)
    summary.events_pruned = events_prune(now=now)
    summary.webhooks = webhooks_maintain(now=now)
    summary.jira_events_pruned = jira_events_prune(now=now)


def refresh_due(options: RunOptions, *, progress: Progress | None = None) -> RunSummary:
    """Refresh every due connection with `options.concurrency` workers and count outcomes.

    Stops taking new work at the first ConfigurationError (Atlassian refused our client
    credentials); the summary then carries the cause and exit_code 2.
    """
    started = time.monotonic()
    problem = configuration_problem()
    if problem is not None:
        return RunSummary(configuration_error=problem)
    batch = _Batch(_due_ids(options, now=clock.now()), options=options, progress=progress)
    workers = max(1, min(options.concurrency, batch.total))
    if workers == 1:
        batch.work()
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="refresh") as pool:
            for future in [pool.submit(batch.work) for _ in range(workers)]:
                future.result()
    summary = batch.finish()
    if summary.configuration_error is None:
        _housekeeping(summary)
    summary.elapsed = time.monotonic() - started
    logger.info("refresh_tokens: %s", summary.as_dict())
    return summary
