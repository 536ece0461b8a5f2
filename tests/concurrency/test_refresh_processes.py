"""Four OS processes of `manage.py refresh_tokens --concurrency 4`, started at once on the
same database and the same 20 due connections, against a strict token server.

Runs on SQLite (one file shared by the processes, WAL) and on PostgreSQL alike.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from integrations.models import ConnectionStatus, JiraConnection
from tests.concurrency.strict import StrictTokenServer, command_env

pytestmark = pytest.mark.django_db(transaction=True)

PROCESSES = 4
GATED_MANAGE = Path(__file__).with_name("gated_manage.py")


def start_refresh_tokens(server: StrictTokenServer, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(GATED_MANAGE), "refresh_tokens", "--json", *args],
        cwd=settings.BASE_DIR,
        env=command_env(server),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def release(processes: list[subprocess.Popen[str]]) -> None:
    """Once every process is set up and waiting, let them all go at once."""
    for process in processes:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n", process.communicate()
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()


def test_four_processes_refresh_each_connection_exactly_once(
    strict_server: StrictTokenServer, due_connections: list[JiraConnection]
) -> None:
    ids = [c.pk for c in due_connections]
    # Long enough that no process is done before the others have listed their work.
    strict_server.set_latency(100)

    processes = [start_refresh_tokens(strict_server, "--concurrency", "4") for _ in range(PROCESSES)]
    release(processes)
    finished = [(p.wait(timeout=60), *p.communicate()) for p in processes]

    for code, _out, err in finished:
        assert code == 0, err
    summaries = [json.loads(out.strip().splitlines()[-1]) for _code, out, _err in finished]
    assert sum(s["refreshed"] for s in summaries) == len(ids)
    if connection.vendor == "postgresql":
        # Batch claims split the due set: every connection went to one process, untried
        # by the others, and the work was shared.
        assert sum(s["due"] for s in summaries) == len(ids)
        assert sum(s["wasted_claims"] for s in summaries) == 0
        assert sum(1 for s in summaries if s["refreshed"]) > 1
    else:
        # The processes did overlap: some connections were due in more than one of them.
        assert sum(s["due"] for s in summaries) > len(ids)
    assert sum(s["needs_reconnect"] + s["transient_failures"] for s in summaries) == 0
    counters = strict_server.counters()
    assert counters["requests"]["token"] == len(ids)
    assert (counters["reuse_detections"], counters["grants_revoked"]) == (0, 0)
    assert strict_server.refreshes_by_account() == {c.account_id: 1 for c in due_connections}
    rows = JiraConnection.objects.filter(pk__in=ids)
    assert {(r.status, r.version, r.claim_id) for r in rows} == {(ConnectionStatus.ACTIVE, 2, None)}
