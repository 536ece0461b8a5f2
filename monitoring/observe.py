"""The hooks the connection lifecycle calls: a refresh, a token call, a claim wait.

Each hook counts into the day's aggregates (monitoring.recorder) or this process's
Prometheus metrics (monitoring.metrics), and a refresh ends with one log line carrying
its connection id, outcome, reason, source and duration. Nothing here decides anything
about a connection: the lifecycle passes plain strings in.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from integrations import clock
from monitoring import metrics, recorder
from monitoring.logs import RefreshContext, current_refresh
from monitoring.models import Kind

# The refresh's own logger: its closing line sits with its other lines, under one name
# operators already filter on.
logger = logging.getLogger("integrations.lifecycle.refresh")


class RefreshSource(enum.StrEnum):
    SCHEDULED = "scheduled"
    ON_DEMAND = "on_demand"
    STAFF = "staff"


# Outcomes that changed nothing and happen by the thousand when runs overlap: DEBUG.
_QUIET = frozenset({"not_due", "claimed_elsewhere", "gone"})
_LOUD = frozenset({"transient_failure", "needs_reconnect", "error"})


@dataclass
class RefreshObservation:
    context: RefreshContext
    outcome: str = "error"
    reason: str = ""

    def finish(self, *, outcome: str, reason: str = "") -> None:
        self.outcome = outcome
        self.reason = reason


@contextmanager
def refresh_observed(*, connection_id: int, source: RefreshSource) -> Iterator[RefreshObservation]:
    """Around one refresh: the caller reports its outcome with `finish`; an exception
    counts as outcome "error" with the exception's class as the reason."""
    context = RefreshContext(connection_id=connection_id, source=source.value, started=clock.monotonic())
    observation = RefreshObservation(context=context)
    token = current_refresh.set(context)
    try:
        yield observation
    except Exception as exc:
        observation.finish(outcome="error", reason=type(exc).__name__)
        raise
    finally:
        current_refresh.reset(token)
        _close(observation)


def _close(observation: RefreshObservation) -> None:
    context = observation.context
    recorder.count_event(
        kind=Kind.REFRESH, outcome=observation.outcome, reason=observation.reason, source=context.source
    )
    level = logging.DEBUG if observation.outcome in _QUIET else logging.INFO
    if observation.outcome in _LOUD:
        level = logging.WARNING
    duration_ms = context.duration_ms()
    reason = f" ({observation.reason})" if observation.reason else ""
    logger.log(
        level,
        "Refresh of connection %s: %s%s in %d ms (%s).",
        context.connection_id,
        observation.outcome,
        reason,
        duration_ms,
        context.source,
        extra={
            "connection_id": context.connection_id,
            "outcome": observation.outcome,
            "reason": observation.reason,
            "source": context.source,
            "duration_ms": duration_ms,
        },
    )
    if context.source == RefreshSource.SCHEDULED:
        # A long run writes as it goes, not only at its end; web workers flush after
        # their response instead (recorder.flush_if_due_on_request_end).
        recorder.flush_if_due()


@contextmanager
def token_call_timed() -> Iterator[None]:
    """Around one round trip to the token endpoint, failed ones included (a timeout is
    exactly the latency worth seeing)."""
    context = current_refresh.get()
    started = clock.monotonic()
    try:
        yield
    finally:
        recorder.token_latency_add(
            seconds=clock.monotonic() - started, source=context.source if context is not None else ""
        )


@dataclass
class ClaimWait:
    """One access-path call's wait for another worker's refresh, if it had to wait."""

    started: datetime | None = None
    timed_out: bool = False

    def polling(self) -> None:
        if self.started is None:
            self.started = clock.now()


@contextmanager
def claim_wait_observed() -> Iterator[ClaimWait]:
    """Around one access-path call: a call that waited is observed however it ended."""
    wait = ClaimWait()
    try:
        yield wait
    finally:
        if wait.started is not None:
            seconds = (clock.now() - wait.started).total_seconds()
            metrics.claim_wait_observe(seconds=seconds, timed_out=wait.timed_out)
