"""Finding due work reads the partial indexes: its cost follows the due rows, not the table."""

from __future__ import annotations

import re

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from integrations.lifecycle.due import connections_due

pytestmark = pytest.mark.django_db


def due_query_plan(**options: str) -> str:
    with CaptureQueriesContext(db_connection) as captured:
        connections_due(now=timezone.now(), **options)
    (query,) = captured.captured_queries
    with db_connection.cursor() as cursor:
        if db_connection.vendor == "postgresql":
            # An empty test table is cheapest to read whole; ask whether an index *can* serve.
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute(f"EXPLAIN {query['sql']}")
        else:
            cursor.execute(f"EXPLAIN QUERY PLAN {query['sql']}")
        return "\n".join(str(row[-1]) for row in cursor.fetchall())


@pytest.mark.parametrize("options", [{}, {"user_email": "alice@example.com"}], ids=["all", "one user"])
def test_due_query_is_one_index_range_scan_per_due_condition(options: dict[str, str]) -> None:
    plan = due_query_plan(**options)

    table = "integrations_jiraconnection"
    if db_connection.vendor == "postgresql":
        assert not re.search(rf"Seq Scan on {table}\b", plan), plan
        assert len(re.findall(r"(?:Index Scan using|Bitmap Index Scan on) conn_due_\w+_idx", plan)) == 3, plan
    else:
        assert f"SCAN {table}" not in plan, plan
        assert len(re.findall(rf"SEARCH {table} USING INDEX conn_due_\w+_idx \(", plan)) == 3, plan
