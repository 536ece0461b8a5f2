"""Query counts of the settings page and My Jira with 1 and with 20 connections.

Counted in-process through the test client with CaptureQueriesContext; the pages must
cost the same number of queries whatever the number of connections (no N+1). My Jira
really calls the sandbox: the search counter proves every enabled site was fetched.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.db import connection as db_connection
from django.db import reset_queries
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from bench import seed
from bench.harness import Outcome, Row, signed_in_client
from sandbox.testing import SandboxClient

PAGES = {"settings": "/settings/", "my_jira": "/jira/"}
DEFAULT_COUNTS = (1, 20)


def _user_with_connections(control: SandboxClient, *, count: int) -> User:
    (owner,) = seed.users(1, prefix=f"queries-{count}-")
    # One synthetic sandbox account per grant, each with the sandbox's 3 sites.
    grants = control.mint(count)
    # Valid tokens: the pages must not take the refresh path while they are counted.
    created = seed.connections([owner] * count, grants, expires_at=timezone.now() + timedelta(minutes=50))
    for connection, grant in zip(created, grants, strict=True):
        seed.sites_from_atlassian(connection, access_token=grant["access_token"])
    return owner


def _count(client: Client, path: str, control: SandboxClient) -> dict[str, Any]:
    client.get(path)  # warm-up: first-request work (template loading, caches) is not the page's
    before = control.counters()["requests"]["search"]
    reset_queries()
    with CaptureQueriesContext(db_connection) as captured:
        response = client.get(path)
    searches = control.counters()["requests"]["search"] - before
    return {
        "status": response.status_code,
        "queries": len(captured.captured_queries),
        # Literals out: one of them is the session key.
        "sql": [re.sub(r"'[^']*'", "'?'", q["sql"])[:300] for q in captured.captured_queries],
        "jira_searches": searches,
    }


def measure(*, control: SandboxClient, counts: Sequence[int] = DEFAULT_COUNTS) -> Outcome:
    """Needs the portal's ATLASSIAN_*_URL pointed at the sandbox behind `control`."""
    pages: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in PAGES}
    # Every view fetches every site: the page cache would hide what a fetch costs.
    with override_settings(MY_JIRA_CACHE_SECONDS=0):
        for count in counts:
            owner = _user_with_connections(control, count=count)
            client = signed_in_client(owner)
            for name, path in PAGES.items():
                pages[name][count] = _count(client, path, control)
    outcome = Outcome("queries")
    for name, by_count in pages.items():
        figures = [by_count[c]["queries"] for c in counts]
        statuses_ok = all(by_count[c]["status"] == 200 for c in counts)
        flat = len(set(figures)) == 1 and statuses_ok
        outcome.rows.append(
            Row(
                f"{name} queries at {', '.join(map(str, counts))} connections",
                " / ".join(map(str, figures)),
                "equal",
                flat,
            )
        )
    outcome.data = {
        "connection_counts": list(counts),
        "pages": {name: {str(c): figures for c, figures in by_count.items()} for name, by_count in pages.items()},
    }
    return outcome
