"""Counting the refreshes Jira calls had to wait for: the cost proof's and the cost
benchmark's measure of "a user waited"."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

from integrations.lifecycle import access
from integrations.lifecycle.refresh import RefreshOutcome, RefreshResult, connection_refresh_for_access


@contextmanager
def on_demand_refreshes() -> Iterator[Counter[int]]:
    """Refreshes a Jira call had to wait for (the access path's own), per connection."""
    counted: Counter[int] = Counter()

    def counting(*, connection_id: int, rejected: bool = False) -> RefreshResult:
        result = connection_refresh_for_access(connection_id=connection_id, rejected=rejected)
        if result.outcome == RefreshOutcome.REFRESHED:
            counted[connection_id] += 1
        return result

    with mock.patch.object(access, "connection_refresh_for_access", counting):
        yield counted
