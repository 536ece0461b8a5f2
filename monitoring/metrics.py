"""Prometheus metrics, correct with any number of gunicorn workers, hosts and cron runs.

Two sources, each where it is exact:
- the database, read at scrape time (DatabaseCollector): connections by status, the
  last successful scheduled run, and the counters every process adds to the daily
  aggregates' lifetime rows (refresh outcomes, token-endpoint latency, any other Kind).
  Every worker on every host reports the same fleet-wide numbers, the scheduled run's
  included, which a process-local counter in a short-lived cron process never could.
- this host's processes, for what happens only inside web workers and needs no
  database write: the access path's waits for another worker's refresh. Under gunicorn
  set PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode): each worker
  writes its values to a file there and a scrape sums them across workers.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator

from django.db.models import Count
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from integrations import clock
from integrations.models import ConnectionStatus, JiraConnection
from integrations.webhook_health import sites_by_health
from monitoring.models import LATENCY_BUCKETS, LATENCY_SUM, DailyCount, Kind
from monitoring.recorder import LIFETIME, refresh_last_success

PREFIX = "jiraconnect"
CLAIM_WAIT_BUCKETS = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0)

CLAIM_WAIT = Histogram(
    f"{PREFIX}_claim_wait_seconds",
    "How long the access path waited for another worker's refresh of the same connection.",
    buckets=CLAIM_WAIT_BUCKETS,
)
CLAIM_WAIT_TIMEOUTS = Counter(
    f"{PREFIX}_claim_wait_timeouts",
    "Access-path waits that gave up before the other worker's refresh finished.",
)


def claim_wait_observe(*, seconds: float, timed_out: bool) -> None:
    CLAIM_WAIT.observe(seconds)
    if timed_out:
        CLAIM_WAIT_TIMEOUTS.inc()


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class _ThisProcess(Collector):
    """The default registry (this process's metrics) inside a per-scrape registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


class DatabaseCollector(Collector):
    """The fleet-wide metrics, four queries per scrape whatever the fleet's size."""

    def collect(self) -> Iterator[Metric]:
        yield from self._connections()
        yield from self._webhook_sites()
        yield from self._lifetime_counts()
        yield from self._last_run()

    def _connections(self) -> Iterator[Metric]:
        by_status = GaugeMetricFamily(f"{PREFIX}_connections", "Jira connections by status.", labels=["status"])
        failing = GaugeMetricFamily(
            f"{PREFIX}_connections_failing", "Connections whose refresh is failing, by reason.", labels=["reason"]
        )
        totals: dict[str, int] = defaultdict(int)
        rows = JiraConnection.objects.values_list("status", "status_reason").annotate(n=Count("pk")).order_by()
        for status, reason, n in rows:
            totals[status] += n
            if status == ConnectionStatus.REFRESH_FAILING:
                failing.add_metric([reason], n)
        for status in ConnectionStatus:
            by_status.add_metric([status.value], totals[status.value])
        yield by_status
        yield failing

    def _webhook_sites(self) -> Iterator[Metric]:
        sites = GaugeMetricFamily(
            f"{PREFIX}_webhook_sites",
            "Sites with Jira webhooks, by the state of their worst webhook (live, pending, failing, expired).",
            labels=["state"],
        )
        for state, n in sites_by_health(now=clock.now()).items():
            sites.add_metric([state.value], n)
        yield sites

    def _lifetime_counts(self) -> Iterator[Metric]:
        rows = DailyCount.objects.filter(day=LIFETIME).values_list("kind", "outcome", "reason", "source", "value")
        counters: dict[str, CounterMetricFamily] = {
            kind.value: CounterMetricFamily(
                f"{PREFIX}_{kind.value}", f"{kind.label}, every process.", labels=["outcome", "reason", "source"]
            )
            for kind in Kind
            if kind != Kind.TOKEN_LATENCY
        }
        latency: dict[str, dict[str, int]] = defaultdict(dict)
        for kind, outcome, reason, source, value in rows:
            if kind == Kind.TOKEN_LATENCY:
                latency[source][outcome] = value
            elif kind in counters:
                counters[kind].add_metric([outcome, reason, source], value)
        yield from counters.values()
        histogram = HistogramMetricFamily(
            f"{PREFIX}_token_endpoint_seconds",
            "Round trips to Atlassian's token endpoint (refreshes), every process.",
            labels=["source"],
        )
        for source, buckets in sorted(latency.items()):
            cumulative, points = 0, []
            for bound in [*(str(b) for b in LATENCY_BUCKETS), "+Inf"]:
                cumulative += buckets.get(bound, 0)
                points.append((bound, float(cumulative)))
            histogram.add_metric([source], points, sum_value=buckets.get(LATENCY_SUM, 0) / 1000)
        yield histogram

    def _last_run(self) -> Iterator[Metric]:
        last = refresh_last_success()
        age = GaugeMetricFamily(
            f"{PREFIX}_refresh_run_last_success_age_seconds",
            "Seconds since the scheduled refresh run (refresh_tokens) last finished; +Inf if it never has.",
            value=math.inf if last is None else max(0.0, (clock.now() - last).total_seconds()),
        )
        yield age
        if last is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_refresh_run_last_success_timestamp_seconds",
                "When the scheduled refresh run last finished (Unix time).",
                value=last.timestamp(),
            )


def exposition() -> bytes:
    """The text a scrape returns: this host's processes plus the database's view."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_mode():
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ThisProcess())
    registry.register(DatabaseCollector())
    return generate_latest(registry)
