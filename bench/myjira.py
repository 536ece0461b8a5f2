"""My Jira over 3 sites against 1 site, with 200 ms on every Jira search.

The same user and connection (Ada: 22 open issues on each of the sandbox's 3 sites);
only the number of enabled sites changes, alternating request by request so that load
from elsewhere on the machine hits both sides alike. Sites are fetched in parallel, so
3 sites should cost about one search round trip, not three (goal: at most 1.5x).
"""

from __future__ import annotations

import time
from datetime import timedelta

from django.test import override_settings
from django.utils import timezone

from bench import seed
from bench.harness import Outcome, Row, median, signed_in_client
from integrations.models import JiraSite
from sandbox.testing import SandboxClient

ADA = "557058:ada-0001"
GOAL = 1.5


def measure(*, control: SandboxClient, latency_ms: int = 200, repeats: int = 9) -> Outcome:
    (owner,) = seed.users(1, prefix="myjira-")
    grants = control.mint(1, account_id=ADA)
    (connection,) = seed.connections([owner], grants, expires_at=timezone.now() + timedelta(minutes=50))
    sites = seed.sites_from_atlassian(connection, access_token=grants[0]["access_token"])
    first = min(sites, key=lambda s: (s.name, s.url))
    client = signed_in_client(owner)

    def enable(all_sites: bool) -> None:
        JiraSite.objects.filter(connection=connection).exclude(pk=first.pk).update(enabled=all_sites)

    def timed() -> float:
        started = time.perf_counter()
        response = client.get("/jira/")
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise AssertionError(f"My Jira answered {response.status_code}")
        return elapsed

    control.faults({"search": {"latency_ms": latency_ms}})
    # Every view fetches every site: the page cache would time a cache hit, not the fan-out.
    no_cache = override_settings(MY_JIRA_CACHE_SECONDS=0)
    no_cache.enable()
    try:
        for all_sites in (False, True):  # warm-up: pool threads, sessions, templates
            enable(all_sites)
            timed()
        before = control.counters()["requests"]["search"]
        one: list[float] = []
        three: list[float] = []
        for _ in range(repeats):
            enable(False)
            one.append(timed())
            enable(True)
            three.append(timed())
        searches = control.counters()["requests"]["search"] - before
    finally:
        no_cache.disable()
        control.faults({})
    ratio = median(three) / median(one)
    outcome = Outcome("myjira")
    outcome.rows = [
        Row("My Jira, 1 site (median)", f"{median(one) * 1000:.0f} ms", f"search latency {latency_ms} ms"),
        Row("My Jira, 3 sites (median)", f"{median(three) * 1000:.0f} ms"),
        Row("3 sites / 1 site", f"{ratio:.2f}x", f"<= {GOAL}x", ratio <= GOAL),
    ]
    outcome.data = {
        "search_latency_ms": latency_ms,
        "repeats": repeats,
        "one_site_seconds": [round(t, 4) for t in one],
        "three_sites_seconds": [round(t, 4) for t in three],
        "one_site_median_seconds": round(median(one), 4),
        "three_sites_median_seconds": round(median(three), 4),
        "ratio": round(ratio, 3),
        # 1 + 3 searches per repetition: proof that the pages really went to Jira.
        "jira_searches": searches,
        "goal": GOAL,
        "goal_met": ratio <= GOAL,
    }
    return outcome
