"""Finding due work reads the partial indexes: its cost follows the due rows, not the table."""

from __future__ import annotations

import re
import uuid

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from integrations.lifecycle.due import DEFAULT_RULE, connections_due
from integrations.lifecycle.refresh import CLAIM_LEASE, BatchClaimer
from integrations.models import JiraConnection

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


@pytest.mark.parametrize(
    ("branch", "index"),
    [(0, "conn_due_warm_idx"), (1, "conn_due_idle_idx"), (2, "conn_due_retry_idx")],
    ids=["warm", "keep-alive", "retry"],
)
def test_each_batch_claim_is_ordered_by_its_own_index_and_reads_it(branch: int, index: str) -> None:
    # An index on the expiry alone once let PostgreSQL order the warm claim by walking it:
    # its range holds every idle connection (their tokens have all expired), 250 ms a claim
    # at 100,000 connections (bench `idle`). The planner only chooses that on a table like
    # production's, so the indexes are checked too: the claim's order is a column of the
    # branch's own index, and no other index leads with it.
    order = DEFAULT_RULE.CLAIM_ORDER[branch]
    (found,) = [candidate for candidate in JiraConnection._meta.indexes if candidate.name == index]
    assert order in found.fields
    leading = [candidate.name for candidate in JiraConnection._meta.indexes if candidate.fields[0] == order]
    assert set(leading) <= {index}, leading
    if db_connection.vendor != "postgresql":
        return  # batch claims are PostgreSQL's
    now = timezone.now()
    statement = BatchClaimer(rule=DEFAULT_RULE)._compile(branch=branch, now=now)
    with db_connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {statement.sql}", [uuid.uuid4(), now + CLAIM_LEASE, *statement.params_at(now), 32])
        plan = "\n".join(row[0] for row in cursor.fetchall())

    scans = re.findall(r"(?:Index Scan(?: Backward)? using|Bitmap Index Scan on) (\w+)", plan)
    assert [name for name in scans if name.startswith("conn_")] == [index], plan
