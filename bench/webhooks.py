"""The webhook receiver under load: signed Jira deliveries to gunicorn, 2 sync workers.

1,000 connections, one site each, both webhooks registered (2,000 JiraWebhook rows), as
the scheduled run leaves them. The portal runs as bench.load starts it (production
settings, behind the TLS proxy, gunicorn.conf.py); wrk sends `jira:issue_updated`
bodies built by the sandbox's own payload code (sandbox.webhooks.event_payload), each
naming real rows in `matchedWebhookIds` (one of the site's two webhooks, or both, as
when the user is assignee and reporter), and signed as the sandbox signs its deliveries
(sandbox.delivery.signed_headers: HS256 with the client secret). bench/wrk_webhooks.lua
builds each request, so every fresh delivery carries its own identifier.

Three kinds, each for the same time through the same server, then a baseline:
- fresh: a new X-Atlassian-Webhook-Identifier each; every answer must be 200 "stored";
- duplicate: Jira's retries (X-Atlassian-Webhook-Retry) of deliveries already stored;
  every answer must be 200 "ok" and nothing new is stored;
- forged: signed with another secret; every answer must be 401 and nothing is stored;
- /healthz (one `SELECT 1`) under the same gunicorn and wrk: the trivial endpoint the
  receiver's throughput is a share of.

After the fresh run the JiraEvent rows must be exactly the distinct identifiers stored,
one row each (each delivery names one site), and at least as many as the "stored"
answers: wrk stops with up to one request per connection in flight, which gunicorn may
still store without wrk reading the answer.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection as db_connection
from django.urls import reverse
from django.utils import timezone

from bench import load, seed
from bench.harness import BASE_DIR, FORWARDED_HEADERS, BenchError, Outcome, Row, analyze
from bench.loadgen import LoadResult
from integrations.lifecycle.webhooks import webhook_specs
from integrations.models import JiraEvent, JiraSite, JiraWebhook, WebhookStatus
from sandbox import seed as sandbox_seed
from sandbox import webhooks as sandbox_webhooks
from sandbox.delivery import JWT_TTL, signed_headers
from sandbox.testing import free_port

SECONDS = 10
CONNECTIONS = load.CONNECTIONS
JIRA_CONNECTIONS = 1000
# Replayed in the duplicate run: wrk cycles through them.
MAX_REPLAYS = 5000
# Jira answers its own deliveries within seconds; the portal's goal is one second.
ANSWER_GOAL_MS = 1000.0
WRK_SCRIPT = BASE_DIR / "bench" / "wrk_webhooks.lua"
FIRST_WEBHOOK_ID = 70_000_000
# As long as a real secret (PyJWT warns below 32 bytes), and not ours.
FORGED_SECRET = "not-the-client-secret-but-as-long-as-one"
ID_HEADER = "X-Atlassian-Webhook-Identifier"
KINDS = ("fresh", "duplicate", "forged")
_EXPECTED = {"fresh": 200, "duplicate": 200, "forged": 401}


@dataclass(frozen=True)
class BenchSite:
    pk: int
    url: str
    webhook_ids: tuple[int, ...]


@dataclass(frozen=True)
class Answers:
    """What bench/wrk_webhooks.lua counted: requests written, answers with the expected
    status and without, and answers whose body says "stored"."""

    sent: int
    expected: int
    unexpected: int
    stored: int


def seed_webhooks(*, connections: int) -> list[BenchSite]:
    """`connections` users, each with one connection, one site and both webhooks registered."""
    owners = seed.users(connections, prefix="hooks-")
    grants = seed.fake_grants(connections, prefix="bench-hooks-")
    rows = seed.connections(owners, grants, expires_at=timezone.now() + timedelta(minutes=50))
    sites = JiraSite.objects.bulk_create(
        (
            JiraSite(
                connection=connection,
                cloud_id=str(uuid.uuid4()),
                name=f"bench-{n:05d}",
                url=f"https://bench-{n:05d}.atlassian.net",
                scopes=[*seed.SCOPES, "manage:jira-webhook"],
            )
            for n, connection in enumerate(rows)
        ),
        batch_size=seed.BATCH,
    )
    now = timezone.now()
    webhooks = []
    for n, (connection, site) in enumerate(zip(rows, sites, strict=True)):
        for k, (slot, spec) in enumerate(webhook_specs(account_id=connection.account_id).items()):
            webhooks.append(
                JiraWebhook(
                    connection=connection,
                    site=site,
                    slot=slot,
                    webhook_id=FIRST_WEBHOOK_ID + 2 * n + k,
                    events=list(spec.events),
                    jql_filter=spec.jql_filter,
                    status=WebhookStatus.ACTIVE,
                    registered_at=now,
                    expires_at=now + timedelta(days=25),
                    last_extended_at=now,
                )
            )
    JiraWebhook.objects.bulk_create(webhooks, batch_size=seed.BATCH)
    analyze(*(model._meta.db_table for model in (JiraSite, JiraWebhook, JiraEvent)))
    return [
        BenchSite(pk=site.pk, url=site.url, webhook_ids=(FIRST_WEBHOOK_ID + 2 * n, FIRST_WEBHOOK_ID + 2 * n + 1))
        for n, site in enumerate(sites)
    ]


def delivery_bodies(sites: Sequence[BenchSite]) -> list[bytes]:
    """Two `jira:issue_updated` bodies per site, as the sandbox sends them: the issue
    moved to Done, matching the assignee webhook alone, then both webhooks."""
    sandbox_site = sandbox_seed.SITES[0]
    issue = sandbox_seed.build_issues()[sandbox_site.cloud_id][0]
    users = {user.account_id: user for user in sandbox_seed.USERS}
    event = sandbox_webhooks.IssueEvent(
        event=sandbox_webhooks.ISSUE_UPDATED,
        site_id=sandbox_site.cloud_id,
        issue_key=issue.key,
        actor_id=sandbox_seed.USERS[0].account_id,
        at=time.time(),
        type_name="issue_generic",
        changelog_id=10_500,
        items=(sandbox_webhooks.ChangeItem("status", "3", "In Progress", "10001", "Done"),),
    )
    template = json.dumps(
        sandbox_webhooks.event_payload(event, sandbox_site, issue, users, sandbox_seed.API_BASE, []),
        separators=(",", ":"),
    )
    bodies = []
    for site in sites:
        on_site = template.replace(sandbox_site.url, site.url)
        for ids in (site.webhook_ids[:1], site.webhook_ids):
            bodies.append(on_site.replace('"matchedWebhookIds":[]', f'"matchedWebhookIds":{json.dumps(list(ids))}'))
    return [body.encode() for body in bodies]


def delivery_headers(*, identifier: str, forged: bool = False, retry: int = 0) -> dict[str, str]:
    """What Atlassian sends with a delivery; `forged` signs with a secret that is not ours."""
    secret = FORGED_SECRET if forged else settings.ATLASSIAN_CLIENT_SECRET
    headers = signed_headers(
        client_id=settings.ATLASSIAN_CLIENT_ID, client_secret=secret, identifier=identifier, retry=retry
    )
    return {**headers, **FORWARDED_HEADERS}


def _lua_string(value: str) -> str:
    level = "=" * 3
    if f"]{level}]" in value:
        raise BenchError("a delivery body holds the Lua string delimiter")
    return f"[{level}[{value}]{level}]"


def write_script_data(
    path: Path, *, kind: str, prefix: str, bodies: Sequence[bytes], replays: Sequence[tuple[str, int]] = ()
) -> None:
    """The Lua table bench/wrk_webhooks.lua reads: headers (freshly signed, so the JWT
    lives JWT_TTL from now), bodies, and for duplicates (identifier, body index) pairs."""
    # wrk_webhooks.lua sets the identifier of each request.
    headers = delivery_headers(identifier="-", forged=kind == "forged", retry=int(kind == "duplicate"))
    lines = [
        f"kind = {_lua_string(kind)}",
        f"prefix = {_lua_string(prefix)}",
        "headers = {",
        *(f"  [ {_lua_string(name)} ] = {_lua_string(value)}," for name, value in headers.items() if name != ID_HEADER),
        "}",
        "bodies = {",
        *(f"  {_lua_string(body.decode())}," for body in bodies),
        "}",
        "replays = {",
        *(f"  {{{_lua_string(ident)}, {index + 1}}}," for ident, index in replays),
        "}",
    ]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def parse_answers(output: str) -> Answers:
    match = re.search(r"Webhook answers: sent (\d+), expected (\d+), unexpected (\d+), stored (\d+)", output)
    if match is None:
        raise BenchError(f"wrk ran without bench/wrk_webhooks.lua:\n{output}")
    sent, expected, unexpected, stored = (int(group) for group in match.groups())
    return Answers(sent=sent, expected=expected, unexpected=unexpected, stored=stored)


def _wrk(url: str, *, data: Path, seconds: int, connections: int, expected: int) -> tuple[LoadResult, Answers]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError("the webhooks benchmark needs wrk (apt-get install wrk)")
    args = [wrk, "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(WRK_SCRIPT), url]
    completed = subprocess.run(
        [*args, "--", str(data), str(expected)], capture_output=True, text=True, check=False, timeout=seconds + 60
    )
    if completed.returncode:
        raise BenchError(f"wrk failed ({completed.returncode}):\n{completed.stdout}{completed.stderr}")
    return load.parse_wrk(completed.stdout), parse_answers(completed.stdout)


def _stored() -> tuple[int, int]:
    """JiraEvent rows, and distinct identifiers among them."""
    rows = JiraEvent.objects.count()
    return rows, JiraEvent.objects.values("identifier").distinct().count()


def _settled(*, quiet: float = 1.0, timeout: float = 15.0) -> tuple[int, int]:
    """_stored() once no row came for `quiet` seconds: wrk stops with requests in
    flight, which gunicorn's workers finish (and store) after wrk has gone."""
    deadline = time.monotonic() + timeout
    last = _stored()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        current = _stored()
        if current == last:
            return current
        last = current
    raise BenchError(f"JiraEvent rows still growing {timeout:.0f} s after wrk stopped")


def _process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a process on this machine, None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_snapshot(server: int) -> dict[str, dict[int, float]]:
    """CPU seconds so far of gunicorn's workers and of the PostgreSQL backends serving
    them (every session on the bench database but ours). Per request, the CPU is a
    figure that other work on a shared machine changes far less than throughput."""
    workers = [
        int(child)
        for task in Path(f"/proc/{server}/task").glob("*")
        for child in (task / "children").read_text().split()
    ]
    with db_connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        backends = [row[0] for row in cursor.fetchall()]
    snapshot: dict[str, dict[int, float]] = {"gunicorn": {}, "postgres": {}}
    for group, pids in (("gunicorn", workers), ("postgres", backends)):
        for pid in pids:
            cpu = _process_cpu(pid)
            if cpu is not None:
                snapshot[group][pid] = cpu
    return snapshot


def _cpu_per_request(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]], requests: int
) -> dict[str, float]:
    """Milliseconds of CPU per answered request, by group (a process that ended in
    between is missed: gunicorn's workers and the pool's sessions live throughout)."""
    return {
        group: round(1000 * sum(cpu - before[group].get(pid, 0.0) for pid, cpu in after[group].items()) / requests, 2)
        if requests
        else 0.0
        for group in after
    }


def _run_kinds(
    base: str, *, server: int, folder: Path, sites: Sequence[BenchSite], seconds: int, connections: int
) -> dict[str, dict[str, Any]]:
    bodies = delivery_bodies(sites)
    body_index = {site.pk: 2 * n + 1 for n, site in enumerate(sites)}
    prefix = f"bench-{uuid.uuid4().hex[:12]}"
    data = folder / "deliveries.lua"
    url = f"{base}{reverse('jira-webhook')}"
    results: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        replays: list[tuple[str, int]] = []
        if kind == "duplicate":
            stored_events = JiraEvent.objects.order_by("id").values_list("identifier", "site_id")
            replays = [(ident, body_index[site_id]) for ident, site_id in stored_events[:MAX_REPLAYS]]
            if not replays:
                raise BenchError("no delivery was stored: nothing to replay")
        write_script_data(data, kind=kind, prefix=f"{prefix}-{kind}", bodies=bodies, replays=replays)
        before = _stored()
        cpu_before = _cpu_snapshot(server)
        result, answers = _wrk(url, data=data, seconds=seconds, connections=connections, expected=_EXPECTED[kind])
        after = _settled()
        results[kind] = {
            "load": result,
            "cpu_ms": _cpu_per_request(cpu_before, _cpu_snapshot(server), result.requests),
            "answers": answers,
            "rows_before": before[0],
            "rows_after": after[0],
            "distinct_after": after[1],
        }
    return results


def measure(
    *, seconds: int = SECONDS, connections: int = CONNECTIONS, jira_connections: int = JIRA_CONNECTIONS
) -> Outcome:
    if seconds * len(KINDS) + 30 > JWT_TTL:
        raise BenchError(f"runs of {seconds} s outlive the JWTs ({JWT_TTL} s)")
    sites = seed_webhooks(connections=jira_connections)
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as name:
        folder = Path(name)
        log_path = folder / "gunicorn.log"
        with log_path.open("wb") as log:
            port = free_port()
            server = load.start_gunicorn(port, log=log)
            try:
                base = f"http://127.0.0.1:{port}"
                results = _run_kinds(
                    base, server=server.pid, folder=folder, sites=sites, seconds=seconds, connections=connections
                )
                cpu_before = _cpu_snapshot(server.pid)
                healthz = load.load(
                    f"{base}/healthz", cookie_name="", cookie="", seconds=seconds, connections=connections
                )
                healthz_cpu = _cpu_per_request(cpu_before, _cpu_snapshot(server.pid), healthz.requests)
            finally:
                server.terminate()
                server.wait(timeout=30)
        log_lines = log_path.read_text(errors="replace").splitlines()
    failures = [line for line in log_lines if " ERROR " in line or "Traceback" in line]
    if failures:
        raise BenchError("the portal logged errors under load:\n" + "\n".join(failures[:20]))
    _check(results, healthz, connections=connections)
    outcome = _outcome(
        results,
        healthz,
        healthz_cpu,
        seconds=seconds,
        connections=connections,
        jira_connections=jira_connections,
    )
    outcome.data["portal_log_lines"] = len(log_lines)
    return outcome


def _check(results: dict[str, dict[str, Any]], healthz: LoadResult, *, connections: int) -> None:
    for kind, found in results.items():
        answers: Answers = found["answers"]
        result: LoadResult = found["load"]
        if answers.unexpected or not answers.expected:
            raise BenchError(
                f"{kind}: {answers.unexpected} of {result.requests} answers were not {_EXPECTED[kind]}"
                f" ({answers.expected} were)"
            )
    fresh, duplicate, forged = (results[kind] for kind in KINDS)
    if fresh["answers"].stored != fresh["answers"].expected:
        raise BenchError(f"fresh: only {fresh['answers'].stored} of {fresh['answers'].expected} answers said stored")
    rows, distinct = fresh["rows_after"], fresh["distinct_after"]
    in_flight = rows - fresh["answers"].stored
    if rows != distinct or not 0 <= in_flight <= connections or rows > fresh["answers"].sent:
        raise BenchError(
            f"fresh: {rows} JiraEvent rows for {distinct} identifiers, {fresh['answers'].stored} answered stored,"
            f" {fresh['answers'].sent} sent"
        )
    if duplicate["answers"].stored or duplicate["rows_after"] != duplicate["rows_before"]:
        raise BenchError(f"duplicate: {duplicate['rows_after'] - duplicate['rows_before']} rows stored by retries")
    if forged["rows_after"] != forged["rows_before"]:
        raise BenchError(f"forged: {forged['rows_after'] - forged['rows_before']} rows stored without a signature")
    if healthz.not_200:
        raise BenchError(f"{healthz.not_200} of {healthz.requests} /healthz answers were not 200")


def _outcome(
    results: dict[str, dict[str, Any]],
    healthz: LoadResult,
    healthz_cpu: dict[str, float],
    *,
    seconds: int,
    connections: int,
    jira_connections: int,
) -> Outcome:
    def figures(result: LoadResult, cpu: dict[str, float]) -> str:
        return (
            f"{result.requests_per_second:.0f}/s, p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms,"
            f" max {result.max_ms:.0f} ms; CPU {cpu['gunicorn']:.1f} + {cpu['postgres']:.1f} ms"
        )

    def total(cpu: dict[str, float]) -> float:
        return cpu["gunicorn"] + cpu["postgres"]

    fresh = results["fresh"]
    fresh_load: LoadResult = fresh["load"]
    share = fresh_load.requests_per_second / healthz.requests_per_second if healthz.requests_per_second else 0.0
    cpu_ratio = total(fresh["cpu_ms"]) / total(healthz_cpu) if total(healthz_cpu) else 0.0
    worst_p99 = max(found["load"].p99_ms for found in results.values())
    labels = {
        "fresh": "fresh deliveries (200 stored)",
        "duplicate": "duplicates (200, nothing stored)",
        "forged": "forged signature (401)",
    }
    outcome = Outcome("webhooks")
    outcome.rows = [
        Row(labels[kind], figures(found["load"], found["cpu_ms"]), f"{found['answers'].expected} answers")
        for kind, found in results.items()
    ]
    outcome.rows += [
        Row("/healthz (baseline)", figures(healthz, healthz_cpu), f"wrk, {connections} connections, {seconds} s"),
        Row("fresh / healthz: throughput, CPU per request", f"{share:.0%}, {cpu_ratio:.1f}x"),
        Row("p99 of every kind", f"{worst_p99:.1f} ms", f"< {ANSWER_GOAL_MS:.0f} ms", worst_p99 < ANSWER_GOAL_MS),
    ]
    outcome.data = {
        "tool": "wrk",
        "gunicorn_workers": load.WORKERS,
        "connections": connections,
        "seconds": seconds,
        "jira_connections": jira_connections,
        "webhook_rows": 2 * jira_connections,
        "debug": settings.DEBUG,
        "cpu_count": os.cpu_count(),
        "kinds": {
            kind: {
                **asdict(found["load"]),
                "answers": asdict(found["answers"]),
                # wrk's errors count the 401s too: these are failed connects, writes, timeouts.
                "socket_errors": found["load"].errors - found["load"].not_200,
                "cpu_ms_per_request": found["cpu_ms"],
                "jira_events_before": found["rows_before"],
                "jira_events_after": found["rows_after"],
            }
            for kind, found in results.items()
        },
        "fresh_stored_unanswered": fresh["rows_after"] - fresh["answers"].stored,
        "healthz": {**asdict(healthz), "cpu_ms_per_request": healthz_cpu},
        "fresh_vs_healthz": round(share, 3),
        "fresh_vs_healthz_cpu": round(cpu_ratio, 2),
        "answer_goal_ms": ANSWER_GOAL_MS,
        "p99_goal_met": worst_p99 < ANSWER_GOAL_MS,
    }
    return outcome
