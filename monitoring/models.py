"""What the monitoring keeps in the database: per-day counters and the run heartbeat.

DailyCount
    One row per (day, kind, outcome, reason, source): how many refreshes ended how, the
    token endpoint's latency histogram, and whatever other kind is added to Kind. Rows
    are incremented by one upsert per flush (monitoring.recorder), never one per event,
    and pruned after MONITORING_RETENTION_DAYS by the scheduled run.
RunHeartbeat
    When the scheduled run last finished its work: /healthz/refresh and the metrics
    read it to say whether refresh is running at all.
ConnectionHealth
    A proxy that gives the admin's "Connection health" page its place and URL.
"""

from __future__ import annotations

from typing import ClassVar

from django.db import models


class Kind(models.TextChoices):
    """What a DailyCount row counts. Adding a kind is one value here: the recorder, the
    Prometheus counter (jiraconnect_<value>_total) and the health page follow."""

    REFRESH = "refresh", "Refresh outcomes"
    # The token endpoint's round trips, one row per latency bucket (outcome = the
    # bucket's upper bound in seconds, as Prometheus' `le`) plus LATENCY_SUM.
    TOKEN_LATENCY = "token_latency", "Token-endpoint latency"
    # Jira webhook deliveries by what came of them: stored, duplicate (a retry),
    # unmatched (no webhook we track), refused (reason: the HTTP status answered).
    DELIVERY = "delivery", "Webhook deliveries"


# Fixed histogram bounds (seconds) for the token endpoint, shared by the daily rows and
# the Prometheus histogram so both tell the same story. The read timeout (20 s) falls
# inside the last finite bucket.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# The TOKEN_LATENCY row holding the day's total in milliseconds (a histogram's _sum).
LATENCY_SUM = "sum_ms"


class DailyCount(models.Model):
    day = models.DateField()
    kind = models.CharField(max_length=32, choices=Kind.choices)
    outcome = models.CharField(max_length=64)
    # Why, when the outcome has a reason (a transient failure's "rate_limited"), else "".
    reason = models.CharField(max_length=64, blank=True)
    # What caused it: "scheduled", "on_demand", "staff" for refreshes.
    source = models.CharField(max_length=128, blank=True)
    # A count of events; for the LATENCY_SUM row, milliseconds.
    value = models.BigIntegerField(default=0)

    class Meta:
        constraints: ClassVar[list[models.BaseConstraint]] = [
            # The upsert's conflict target.
            models.UniqueConstraint(
                fields=["day", "kind", "outcome", "reason", "source"], name="monitoring_dailycount_key"
            ),
        ]
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["kind", "day"], name="monitoring_kind_day_idx"),
        ]

    def __str__(self) -> str:
        reason = f" ({self.reason})" if self.reason else ""
        return f"{self.day} {self.kind} {self.outcome}{reason} via {self.source or '-'}: {self.value}"


class RunHeartbeat(models.Model):
    name = models.CharField(max_length=64, primary_key=True)
    last_success_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name}: last success {self.last_success_at:%Y-%m-%d %H:%M:%S}"


# The scheduled run (refresh_tokens) writes this heartbeat.
REFRESH_RUN = "refresh_tokens"


class ConnectionHealth(DailyCount):
    class Meta:
        proxy = True
        verbose_name = "connection health"
        verbose_name_plural = "connection health"
