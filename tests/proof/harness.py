"""The proof suites' tools: seeded connections, refresh_tokens processes, on-demand API
bursts, the leak scan of everything a proof produced, and the figures it records.

Everything here drives the real pieces from outside, as production would: the sandbox
(`python -m sandbox`, sandbox.testing.SandboxProcess) plays Atlassian in its own process,
controlled through its SandboxClient, and `manage.py refresh_tokens` runs as separate OS
processes on the test database (tests.support.processes), as if on separate hosts.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection as db_connection
from django.db.models import F
from django.utils import timezone

from accounts.models import User
from bench.harness import ConnectionSampler
from integrations import atlassian
from integrations.lifecycle.access import ConnectionTokens, connection_access_token
from integrations.models import ConnectionStatus, JiraConnection, JiraSite
from sandbox.testing import SandboxClient
from tests.support.processes import (
    PROJECT,
    RefreshProcess,
    RunResult,
    child_env,
    database_url,
    log_texts,
    named_database_url,
    portal_env,
)
from tests.support.secrets import assert_no_secrets, raw_rows

ARTIFACTS = Path(settings.BASE_DIR) / "artifacts" / "proof"
# Starts `python -m sandbox` with the test settings' credentials, points this process at
# it, and returns its control client (the proofs' `start_sandbox` fixture).
StartSandbox = Callable[..., SandboxClient]


def delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, int]:
    """Counter differences, the token endpoint's request count included."""
    keys = ("refreshes", "reuse_detections", "leeway_reuses", "grants_revoked", "faults_injected")
    result = {key: int(after[key]) - int(before[key]) for key in keys}
    result["token_requests"] = int(after["requests"]["token"]) - int(before["requests"]["token"])
    return result


def faults_by_kind(after: dict[str, Any], before: dict[str, Any]) -> dict[str, int]:
    """Injected faults between two counter snapshots, per kind ("500", "429", "timeout"...)."""
    return {kind: int(count) - int(before["faults_by_kind"][kind]) for kind, count in after["faults_by_kind"].items()}


# --- The portal's database -------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    ids: list[int]
    account_of: dict[int, str]
    site: dict[str, Any]


def seed_connections(sandbox: SandboxClient, count: int) -> Seeded:
    """`count` due connections, each holding its own live grant minted by the sandbox."""
    grants = sandbox.mint(count)
    sites = sandbox.sites_of()
    now = timezone.now()
    users = User.objects.bulk_create(
        [User(email=f"{grant['account_id'].replace(':', '-')}@proof.example", password="!") for grant in grants]
    )
    connections = JiraConnection.objects.bulk_create(
        [
            JiraConnection(
                user=user,
                account_id=grant["account_id"],
                account_name=f"Proof {grant['account_id']}",
                account_email=user.email,
                access_token=grant["access_token"],
                refresh_token=grant["refresh_token"],
                scopes=grant["scope"].split(),
                access_token_expires_at=now - timedelta(minutes=1),
                tokens_issued_at=now,
                first_consented_at=now,
                # In use: the scheduled run keeps these warm (lifecycle.due).
                last_used_at=now,
            )
            for user, grant in zip(users, grants, strict=True)
        ]
    )
    JiraSite.objects.bulk_create(
        [
            JiraSite(connection=connection, cloud_id=site["id"], url=site["url"], name=site["name"])
            for connection in connections
            for site in sites
        ]
    )
    return Seeded(
        ids=[c.pk for c in connections],
        account_of={c.pk: c.account_id for c in connections},
        site=sites[0],
    )


def make_due(ids: Iterable[int]) -> None:
    """Time passes: the access tokens expire (what a real hour would do)."""
    JiraConnection.objects.filter(pk__in=list(ids)).update(
        access_token_expires_at=timezone.now() - timedelta(minutes=1)
    )


def _wait_on_postgres(sql: str, done: Callable[[int], bool], *, timeout: float, every: float, why: str) -> None:
    if db_connection.vendor != "postgresql":
        return
    deadline = time.monotonic() + timeout
    with db_connection.cursor() as cursor:
        while True:
            cursor.execute(sql)
            value = int(cursor.fetchone()[0])
            if done(value):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{why} (found {value})")
            time.sleep(every)


def wait_for_connection_slots(needed: int, timeout: float = 120.0) -> None:
    """Until PostgreSQL has `needed` connection slots free: the server is shared (other
    test runs), and a refresher refused a connection would fail the proof for nothing."""
    _wait_on_postgres(
        "SELECT current_setting('max_connections')::int"
        " - current_setting('superuser_reserved_connections')::int - count(*) FROM pg_stat_activity",
        lambda free: free >= needed,
        timeout=timeout,
        every=1,
        why=f"PostgreSQL lacks the {needed} free connections the proof needs",
    )


def wait_for_other_sessions_to_end(timeout: float = 30.0) -> None:
    """Until no refresh_tokens process's session is connected to the database
    (PostgreSQL): a killed process's last statement, already sent, still runs and commits
    on the server. (This process's own pool may keep idle sessions open: not counted.)"""
    _wait_on_postgres(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name LIKE 'refresh-%'",
        lambda sessions: sessions == 0,
        timeout=timeout,
        every=0.05,
        why="sessions of a killed process are still connected",
    )


def versions(ids: Iterable[int]) -> dict[int, int]:
    return dict(JiraConnection.objects.filter(pk__in=list(ids)).values_list("pk", "version"))


def status_counts(ids: Iterable[int]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in JiraConnection.objects.filter(pk__in=list(ids)).values_list("status", flat=True):
        counts[status] = counts.get(status, 0) + 1
    return counts


def needs_reconnect(ids: Iterable[int]) -> set[int]:
    rows = JiraConnection.objects.filter(pk__in=list(ids), status=ConnectionStatus.NEEDS_RECONNECT)
    return set(rows.values_list("pk", flat=True))


def reconnect(sandbox: SandboxClient, seeded: Seeded, ids: Iterable[int]) -> None:
    """The users of `ids` consent again: a fresh grant each, written as a reconnect would."""
    for pk in ids:
        (grant,) = sandbox.mint(1, account_id=seeded.account_of[pk])
        JiraConnection.objects.filter(pk=pk).update(
            access_token=grant["access_token"],
            refresh_token=grant["refresh_token"],
            status=ConnectionStatus.ACTIVE,
            status_reason="",
            status_message="",
            failure_count=0,
            next_attempt_at=None,
            claim_id=None,
            claimed_until=None,
            version=F("version") + 1,
        )


# --- refresh_tokens as OS processes ---------------------------------------------------------


def refresh_tokens(sandbox: SandboxClient, log_dir: Path, name: str, *args: str, **env: str) -> RunResult:
    return RefreshProcess(sandbox.base_url, log_dir, name, *args, env=env).wait()


def connection_sampler() -> ConnectionSampler:
    """Samples the test database's sessions (bench.harness.ConnectionSampler)."""
    return ConnectionSampler(url=database_url(), database=str(db_connection.settings_dict["NAME"]))


class WebProcess:
    """The portal under gunicorn (one worker, as deployed), on the test database."""

    def __init__(self, sandbox: SandboxClient, log_dir: Path, *, application_name: str = "web") -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        self.log = log_dir / "web.err"
        env = child_env({**portal_env(sandbox.base_url), "DATABASE_URL": named_database_url(application_name)})
        with self.log.open("wb") as err:
            self.popen = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "jiraconnect.wsgi",
                    "--workers",
                    "1",
                    "--bind",
                    f"127.0.0.1:{self.port}",
                ],
                cwd=PROJECT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.wait_until_up()

    def get(self, path: str, *, timeout: float = 10) -> tuple[int, float]:
        """(status, seconds) of one GET."""
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"Host": "localhost"})
            status = conn.getresponse().status
        finally:
            conn.close()
        return status, time.monotonic() - started

    def wait_until_up(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.get("/healthz")[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline or self.popen.poll() is not None:
                self.stop()
                raise RuntimeError(f"the portal did not start: {self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> str:
        """Stops the server; returns what it wrote to stderr."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        return self.log.read_text(errors="replace")


class WebPoller:
    """GETs `path` on `web` in a thread, one request after another, until stopped."""

    def __init__(self, web: WebProcess, path: str) -> None:
        self.web = web
        self.path = path
        self.statuses: list[int] = []
        self.seconds: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="web-poller", daemon=True)

    def __enter__(self) -> WebPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                status, seconds = self.web.get(self.path)
                self.statuses.append(status)
                self.seconds.append(seconds)
            except OSError as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(0.05)


# --- On-demand API calls while the refreshers run -----------------------------------------------


@dataclass
class Burst:
    """`calls` threads released together: half ask services for an access token, half call
    JiraClient.myself (which must answer as the connection's own Atlassian account)."""

    threads: list[threading.Thread] = field(default_factory=list)
    ok: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def join(self, timeout: float = 120) -> Burst:
        for thread in self.threads:
            thread.join(timeout)
        assert not any(thread.is_alive() for thread in self.threads), "an API call hung"
        return self


def api_burst(seeded: Seeded, *, calls: int, rng: random.Random) -> Burst:
    burst = Burst()
    if calls == 0:
        return burst
    barrier = threading.Barrier(calls)
    site = seeded.site

    def call(n: int, pk: int) -> None:
        try:
            barrier.wait(timeout=60)
            if n % 2:
                assert connection_access_token(connection_id=pk)
            else:
                client = atlassian.JiraClient(
                    cloud_id=site["id"], site_url=site["url"], tokens=ConnectionTokens(connection_id=pk)
                )
                me = client.myself()
                assert me["accountId"] == seeded.account_of[pk], "answered as another account"
            with burst.lock:
                burst.ok += 1
        except Exception as exc:
            with burst.lock:
                burst.errors.append(f"connection {pk}: {type(exc).__name__}: {exc}")
        finally:
            db_connection.close()

    for n in range(calls):
        thread = threading.Thread(target=call, args=(n, rng.choice(seeded.ids)), name=f"api-{n}")
        burst.threads.append(thread)
        thread.start()
    return burst


# --- Leaked secrets ----------------------------------------------------------------------------


def assert_no_secret_leaked(sandbox: SandboxClient, logs: Path, **texts: str) -> dict[str, int]:
    """No secret the sandbox issued in the processes' output in `logs`, in the raw
    columns of the database, nor in `texts`; returns what was scanned."""
    return assert_no_secrets({**log_texts(logs), "database": raw_rows(), **texts}, *sandbox.issued_secrets())


# --- Figures for docs/evidence.md ------------------------------------------------------------


def machine() -> dict[str, Any]:
    with db_connection.cursor() as cursor:
        if db_connection.vendor == "postgresql":
            cursor.execute("SHOW server_version")
            database = f"PostgreSQL {cursor.fetchone()[0]}"
        else:
            cursor.execute("SELECT sqlite_version()")
            database = f"SQLite {cursor.fetchone()[0]}"
    mem_kb = 0
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        found = re.search(r"MemTotal:\s+(\d+)", meminfo.read_text())
        mem_kb = int(found.group(1)) if found else 0
    return {
        "cpus": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "database": database,
        "platform": platform.platform(),
    }


def record(name: str, figures: dict[str, Any]) -> None:
    """Figures of one proof run, for docs/evidence.md (artifacts/proof/<name>.json)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    payload = {"recorded_at": timezone.now().isoformat(timespec="seconds"), "machine": machine(), **figures}
    (ARTIFACTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")


@contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    timing: dict[str, float] = {}
    started = time.monotonic()
    try:
        yield timing
    finally:
        timing["seconds"] = round(time.monotonic() - started, 2)
