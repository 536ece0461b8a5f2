"""Cost follows use, proved on simulated time against the sandbox process.

The portal's clock (integrations.clock) and the sandbox's (/_sandbox/clock) move forward
together in steps, with no sleeping; at each step some users call Jira and the
scheduled run (`refresh_due`, what cron's `refresh_tokens` calls) runs.

- A day: a few connections used hourly, the rest idle. Idle connections cost at most one
  refresh, routine refreshes add no audit rows, and used connections never wait for a
  refresh after their first call.
- 120 days, runs every 6 hours: nothing dies of Atlassian's 90-day inactivity limit.
- 366 days, two overlapping runs a day: every user is warned 14 days and 1 day before
  Atlassian's 365-day consent ends, once each.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.db import connections as db_connections

from accounts.models import User
from integrations.lifecycle import access
from integrations.lifecycle import run as refresh_run
from integrations.models import ConnectionEvent, ConnectionStatus, EventKind, JiraConnection
from sandbox.testing import SandboxClient
from tests.proof.harness import Seeded, StartSandbox, record, seed_connections, stopwatch
from tests.support.clock import FakeClock, install_clock
from tests.support.refreshes import on_demand_refreshes

pytestmark = pytest.mark.django_db(transaction=True)

HOUR = 3600.0


class Simulation:
    """Both clocks, the users who call Jira, and what each connection cost."""

    def __init__(self, sandbox: SandboxClient, clock: FakeClock, seeded: Seeded, *, used: int) -> None:
        self.sandbox = sandbox
        self.clock = clock
        self.ids = seeded.ids
        self.account_of = seeded.account_of
        self.used_ids = seeded.ids[:used]
        self.waits: Counter[int] = Counter()
        self.calls = 0
        # Just connected, on the simulation's clock: token valid for the hour, unused yet.
        JiraConnection.objects.filter(pk__in=self.ids).update(
            access_token_expires_at=clock.now() + timedelta(minutes=59),
            tokens_issued_at=clock.now(),
            first_consented_at=clock.now(),
            last_used_at=None,
        )

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds=seconds)
        self.sandbox.advance(seconds)

    def use(self, connection_ids: list[int]) -> None:
        for user in User.objects.filter(jira_connections__pk__in=connection_ids):
            for site in access.jira_for(user):
                site.client.myself()
                self.calls += 1

    def run(self, **options: Any) -> refresh_run.RunSummary:
        summary = refresh_run.refresh_due(refresh_run.RunOptions(concurrency=1, **options))
        assert summary.exit_code == 0, summary.as_dict()
        return summary

    def refreshes(self) -> dict[int, int]:
        by_account = self.sandbox.refreshes_by_account()
        return {pk: by_account.get(account, 0) for pk, account in self.account_of.items()}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    return install_clock(monkeypatch)


@pytest.fixture
def counted_waits() -> Iterator[Counter[int]]:
    with on_demand_refreshes() as waits:
        yield waits


def test_a_day_costs_idle_connections_at_most_one_refresh_and_no_routine_audit_rows(
    start_sandbox: StartSandbox, clock: FakeClock, counted_waits: Counter[int]
) -> None:
    sandbox = start_sandbox(leeway=0)
    sim = Simulation(sandbox, clock, seed_connections(sandbox, 24), used=3)
    events_before = ConnectionEvent.objects.count()

    with stopwatch() as timing:
        for quarter in range(24 * 4):  # cron every 15 minutes
            if quarter % 4 == 0:
                sim.use(sim.used_ids)  # three users open My Jira every hour
            sim.run()
            sim.advance(HOUR / 4)

    refreshes = sim.refreshes()
    idle_ids = [pk for pk in sim.ids if pk not in sim.used_ids]
    assert max(refreshes[pk] for pk in idle_ids) <= 1
    # Renewed in the 15 minutes before each expiry: about every 45 minutes, and no waiting.
    assert all(28 <= refreshes[pk] <= 33 for pk in sim.used_ids), refreshes
    assert sum(counted_waits.values()) == 0, counted_waits
    assert ConnectionEvent.objects.count() == events_before
    assert not JiraConnection.objects.exclude(status=ConnectionStatus.ACTIVE).exists()
    record(
        "cost_day",
        {
            "connections": len(sim.ids),
            "used_hourly": len(sim.used_ids),
            "token_calls": sum(refreshes.values()),
            "token_calls_per_used_connection": sorted(refreshes[pk] for pk in sim.used_ids),
            "token_calls_per_idle_connection_max": max(refreshes[pk] for pk in idle_ids),
            "jira_calls": sim.calls,
            "calls_that_waited_for_a_refresh": sum(counted_waits.values()),
            "audit_rows_added": ConnectionEvent.objects.count() - events_before,
            "seconds": timing["seconds"],
        },
    )


@pytest.mark.slow
def test_120_days_of_runs_every_6_hours_lose_no_connection_to_inactivity(
    start_sandbox: StartSandbox, clock: FakeClock, counted_waits: Counter[int]
) -> None:
    sandbox = start_sandbox(leeway=0)
    sim = Simulation(sandbox, clock, seed_connections(sandbox, 12), used=1)

    with stopwatch() as timing:
        for step in range(120 * 4):
            if step % 4 == 0:
                sim.use(sim.used_ids)  # one user, once a day
            sim.run()
            sim.advance(6 * HOUR)

    refreshes = sim.refreshes()
    idle_ids = [pk for pk in sim.ids if pk not in sim.used_ids]
    assert not JiraConnection.objects.filter(pk__in=sim.ids).exclude(status=ConnectionStatus.ACTIVE).exists()
    # Keep-alive every 30 idle days (days 30, 60 and 90), far inside Atlassian's 90.
    assert all(refreshes[pk] == 3 for pk in idle_ids), refreshes
    sim.use(sim.ids)  # every connection still works
    record(
        "cost_120_days",
        {
            "connections": len(sim.ids),
            "token_calls_per_idle_connection": sorted(refreshes[pk] for pk in idle_ids),
            "token_calls_for_the_daily_user": refreshes[sim.used_ids[0]],
            "needs_reconnect": 0,
            "seconds": timing["seconds"],
        },
    )


@pytest.mark.slow
def test_a_year_with_overlapping_daily_runs_warns_each_user_twice_before_consent_ends(
    start_sandbox: StartSandbox, clock: FakeClock
) -> None:
    sandbox = start_sandbox(leeway=0)
    sim = Simulation(sandbox, clock, seed_connections(sandbox, 6), used=0)
    warned_on: dict[str, list[int]] = {}

    def overlapping_runs() -> None:
        def one() -> None:
            try:
                sim.run()
            finally:
                db_connections.close_all()

        threads = [threading.Thread(target=one) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    with stopwatch() as timing:
        for day in range(366):
            before = len(mail.outbox)
            overlapping_runs()
            for message in mail.outbox[before:]:
                if "before it expires" in message.subject:
                    warned_on.setdefault(message.to[0], []).append(day)
            sim.advance(24 * HOUR)

    users = list(User.objects.filter(jira_connections__pk__in=sim.ids).values_list("email", flat=True))
    assert set(warned_on) == set(users)
    # Consent given on day 0 ends on day 365: warned on day 351 and day 364, once each.
    assert all(days == [351, 364] for days in warned_on.values()), warned_on
    assert ConnectionEvent.objects.filter(kind=EventKind.CONSENT_EXPIRY_WARNED).count() == 2 * len(users)
    # The grant has ended at Atlassian: the next call finds out, and the user is asked to reconnect.
    for user in User.objects.filter(jira_connections__pk__in=sim.ids):
        site = next(access.jira_for(user))
        with pytest.raises(access.ConnectionUnusableError) as refused:
            site.client.myself()
        assert refused.value.permanent
    assert set(JiraConnection.objects.filter(pk__in=sim.ids).values_list("status", flat=True)) == {
        ConnectionStatus.NEEDS_RECONNECT
    }
    record(
        "cost_consent_year",
        {
            "connections": len(users),
            "warning_days": sorted({tuple(days) for days in warned_on.values()}),
            "warnings_per_user": 2,
            "overlapping_runs_per_day": 2,
            "seconds": timing["seconds"],
        },
    )
