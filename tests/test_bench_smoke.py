"""The benchmarks' code still runs (`make bench` is not part of CI).

The query-count and cost benchmarks run on a tiny scale against an in-process sandbox; the
parsers of the load benchmark read a real wrk report; the production environment the
bench gives the portal passes the settings' own checks. No timing is asserted anywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from django.contrib.sessions.models import Session

from bench import cost, queries
from bench.harness import (
    BASE_DIR,
    BenchError,
    Outcome,
    Row,
    format_table,
    portal_environment,
    write_results,
)
from bench.load import parse_wrk
from sandbox.server import Sandbox, SandboxConfig
from sandbox.testing import SandboxClient


@pytest.fixture
def sandbox(settings: Any) -> Iterator[Sandbox]:
    # The portal's own credentials: the cost benchmark refreshes tokens.
    config = SandboxConfig(
        port=0,
        client_id=settings.ATLASSIAN_CLIENT_ID,
        client_secret=settings.ATLASSIAN_CLIENT_SECRET,
        redirect_uri=settings.ATLASSIAN_REDIRECT_URI,
    )
    with Sandbox(config) as server:
        settings.ATLASSIAN_AUTH_URL = server.url
        settings.ATLASSIAN_API_URL = server.url
        yield server


@pytest.mark.django_db
def test_query_benchmark_finds_pages_cost_the_same_queries_with_more_connections(sandbox: Sandbox) -> None:
    with closing(SandboxClient(sandbox.url, sandbox.config)) as control:
        outcome = queries.measure(control=control, counts=(1, 3))

    pages = outcome.data["pages"]
    for name in ("settings", "my_jira"):
        assert {pages[name][c]["status"] for c in ("1", "3")} == {200}
        assert pages[name]["1"]["queries"] == pages[name]["3"]["queries"] > 0
    # My Jira really went to Jira: one search per site, 3 sites per sandbox account.
    assert pages["my_jira"]["1"]["jira_searches"] == 3
    assert pages["my_jira"]["3"]["jira_searches"] == 9
    assert pages["settings"]["3"]["jira_searches"] == 0
    assert [row.met for row in outcome.rows] == [True, True]
    # The recorded SQL carries no literal (the session key is one).
    recorded = json.dumps(pages)
    assert "'?'" in recorded
    assert all(session.session_key not in recorded for session in Session.objects.all())


@pytest.mark.django_db(transaction=True)
def test_cost_benchmark_simulates_the_day_the_real_refresh_runs_cost(sandbox: Sandbox) -> None:
    with closing(SandboxClient(sandbox.url, sandbox.config)) as control:
        outcome = cost.measure(control=control, connections=300, validate_after=100, validate_before=10)

    # The simulated day agrees with the real refresh_tokens runs and Jira calls, both policies.
    for policy in ("after", "before"):
        check = outcome.data["validation"][policy]
        assert check["differences"] == dict.fromkeys(check["differences"], 0), check
        assert check["replayed"]["token_calls"] > 0
    days = outcome.data["days"]
    assert days["after"]["per_idle_connection_max"] == 1
    assert days["after"]["audit_rows"].get("refreshed", 0) == 0
    assert days["before"]["audit_rows"][cost.EMULATED_REFRESHED] == days["before"]["token_calls"]
    assert days["after"]["token_calls"] < days["before"]["token_calls"] / 10
    assert all(row.met for row in outcome.rows if row.met is not None)


WRK_REPORT = """Running 10s test @ http://127.0.0.1:8123/settings/
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    12.51ms    3.02ms  48.10ms   81.00%
    Req/Sec   320.11     25.40   380.00     70.00%
  Latency Distribution
     50%   11.90ms
     75%   13.20ms
     90%   15.80ms
     99%    1.20s
  6402 requests in 10.01s, 45.13MB read
  Socket errors: connect 0, read 6402, write 0, timeout 2
  Non-2xx or 3xx responses: 1
Requests/sec:    639.60
Transfer/sec:      4.51MB
Not-200 responses: 3
"""


def test_wrk_report_is_read_with_units_and_real_errors_only() -> None:
    result = parse_wrk(WRK_REPORT)

    assert result.requests == 6402
    assert result.requests_per_second == pytest.approx(639.60)
    assert result.p50_ms == pytest.approx(11.9)
    assert result.p99_ms == pytest.approx(1200.0)
    assert result.seconds == pytest.approx(10.01)
    # Read "errors" are gunicorn closing each connection after its answer; the
    # timeouts and the answers other than 200 (redirects too, which wrk's own
    # "Non-2xx or 3xx" count leaves out) are real.
    assert result.not_200 == 3
    assert result.errors == 5


def test_wrk_report_without_the_status_script_is_refused() -> None:
    # Without bench/wrk_status.lua a page of redirects would pass for a fast page.
    report = WRK_REPORT.replace("Not-200 responses: 3\n", "")

    with pytest.raises(BenchError, match=r"wrk_status\.lua"):
        parse_wrk(report)


def test_bench_environment_is_a_production_configuration() -> None:
    environment = portal_environment(sandbox_url="http://127.0.0.1:8001", db_url="sqlite:///:memory:")
    probe = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.DEBUG, s.SECURE_SSL_REDIRECT, s.SECURE_PROXY_SSL_HEADER, s.ALLOWED_HOSTS)"
    )

    completed = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=BASE_DIR,
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split() == ["False", "True", "('HTTP_X_FORWARDED_PROTO',", "'https')", "['127.0.0.1']"]


def test_results_file_keeps_other_benchmarks_when_one_is_rerun(tmp_path: Path) -> None:
    target = tmp_path / "latest.json"
    first = Outcome("idle", [Row("wall", "0.6 s", "< 1 s", True)], {"plan": "Bitmap Heap Scan"})
    write_results([first], meta={"date": "2026-11-28T00:00:00+00:00"}, path=target)
    second = Outcome("queries", [Row("settings", "4 / 4", "equal", False)])
    write_results([second], meta={"date": "2026-11-29T00:00:00+00:00"}, path=target)

    document = json.loads(target.read_text())
    assert document["date"] == "2026-11-29T00:00:00+00:00"
    assert document["benchmarks"]["idle"]["plan"] == "Bitmap Heap Scan"
    assert document["benchmarks"]["idle"]["measured_at"] == "2026-11-28T00:00:00+00:00"
    assert document["benchmarks"]["queries"]["table"][0]["met"] is False
    assert "MISSED" in format_table([second])
