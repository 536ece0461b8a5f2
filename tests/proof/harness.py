"""The proof suites' tools: a sandbox process, seeded connections, refresh_tokens
processes, on-demand API bursts, and a scanner for leaked secrets.

Everything here drives the real pieces from outside, as production would: the sandbox
(`python -m sandbox`) plays Atlassian in its own process, and `manage.py refresh_tokens`
runs as separate OS processes on the test database, as if on separate hosts.
"""

from __future__ import annotations

import http.client
import json
import logging
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
from unittest import mock
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection as db_connection
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import F
from django.utils import timezone

from accounts.models import User
from bench.harness import ConnectionSampler, with_application_name
from integrations import atlassian
from integrations.lifecycle.access import ConnectionTokens, connection_access_token
from integrations.models import ConnectionStatus, JiraConnection, JiraSite
from sandbox.config import SandboxConfig
from sandbox.seed import ADA
from sandbox.testing import SandboxClient
from tests.support import unsafe as unsafe_launcher

PROJECT = Path(settings.BASE_DIR)
ARTIFACTS = PROJECT / "artifacts" / "proof"
INTEGRATION_TABLES = ("integrations_jiraconnection", "integrations_jirasite", "integrations_connectionevent")


# --- The sandbox, in its own process ------------------------------------------------------


class SandboxProcess:
    """`python -m sandbox` on an ephemeral port, with the portal's test client credentials."""

    def __init__(self, log_dir: Path, *, leeway: float, access_ttl: int = 3600) -> None:
        self.log_dir = log_dir
        self.leeway = leeway
        self.access_ttl = access_ttl
        self.config = SandboxConfig(
            client_id=settings.ATLASSIAN_CLIENT_ID,
            client_secret=settings.ATLASSIAN_CLIENT_SECRET,
            redirect_uri=settings.ATLASSIAN_REDIRECT_URI,
            leeway=leeway,
            access_ttl=access_ttl,
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._client: SandboxClient | None = None

    def start(self) -> SandboxProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = self.log_dir / f"sandbox-{time.monotonic_ns()}.log"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONDONTWRITEBYTECODE": "1",
            # Through the environment, not argv: the secret stays out of `ps`.
            "SANDBOX_CLIENT_ID": self.config.client_id,
            "SANDBOX_CLIENT_SECRET": self.config.client_secret,
            "SANDBOX_REDIRECT_URI": self.config.redirect_uri,
        }
        with out.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sandbox", "--port", "0", "--quiet", *self._options()],
                cwd=PROJECT,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            found = re.search(r"listening on (http://[0-9.:]+)", out.read_text(errors="replace"))
            if found:
                self.url = found.group(1)
                self._client = SandboxClient(self.url, self.config, timeout=30)
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the sandbox did not start: {out.read_text(errors='replace')[-2000:]}")

    def _options(self) -> list[str]:
        return ["--leeway", str(self.leeway), "--access-ttl", str(self.access_ttl)]

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    @property
    def client(self) -> SandboxClient:
        assert self._client is not None, "the sandbox is not started"
        return self._client

    def counters(self) -> dict[str, Any]:
        return self.client.counters()

    def secrets(self) -> list[str]:
        issued = self.client.control("secrets")
        return [
            self.config.client_secret,
            issued["client_secret"],
            *issued["codes"],
            *issued["access_tokens"],
            *issued["refresh_tokens"],
        ]

    def mint(self, count: int, *, account_id: str | None = None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"count": count}
        if account_id is not None:
            body["account_id"] = account_id
        return list(self.client.control("grants", body))

    def faults(self, spec: dict[str, Any]) -> None:
        self.client.faults(spec)

    def configure(self, **changes: Any) -> None:
        self.client.configure(**changes)

    def advance(self, seconds: float) -> None:
        self.client.advance(seconds)

    def revoke(self, account_id: str) -> None:
        self.client.control("revoke", {"account_id": account_id})

    def refreshes_by_account(self) -> dict[str, int]:
        return dict(self.client.control("refreshes")["by_account"])

    def grants(self) -> list[dict[str, Any]]:
        return list(self.client.control("grants"))

    def sites(self) -> list[dict[str, Any]]:
        """The Jira sites of the minted accounts (they get Ada's)."""
        seed = self.client.control("seed")
        ada = next(user for user in seed["users"] if user["account_id"] == ADA)
        return [site for site in seed["sites"] if site["id"] in ada["site_ids"]]

    def wait_for_token_requests(self, above: int, *, timeout: float = 120.0) -> None:
        """Until the token endpoint has seen more than `above` requests."""
        deadline = time.monotonic() + timeout
        while self.counters()["requests"]["token"] <= above:
            if time.monotonic() > deadline:
                raise AssertionError("no token request reached the sandbox in time")
            time.sleep(0.02)


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


def database_url() -> str:
    """The live (test) database as a URL for child processes."""
    db = db_connection.settings_dict
    if db_connection.vendor == "sqlite":
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@dataclass(frozen=True)
class Seeded:
    ids: list[int]
    account_of: dict[int, str]
    site: dict[str, Any]


def seed_connections(sandbox: SandboxProcess, count: int) -> Seeded:
    """`count` due connections, each holding its own live grant minted by the sandbox."""
    grants = sandbox.mint(count)
    sites = sandbox.sites()
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


def reconnect(sandbox: SandboxProcess, seeded: Seeded, ids: Iterable[int]) -> None:
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


def raw_rows(tables: Iterable[str] = INTEGRATION_TABLES) -> str:
    """Every column of every row, as the database holds it (bytes decoded latin-1)."""
    lines: list[str] = []
    with db_connection.cursor() as cursor:
        for table in tables:
            # In key order: an UPDATE that changes nothing still moves a row on PostgreSQL.
            cursor.execute(f"SELECT * FROM {db_connection.ops.quote_name(table)} ORDER BY 1")  # noqa: S608
            for row in cursor.fetchall():
                lines.append(" | ".join(_raw(value) for value in row))
    return "\n".join(lines)


def _raw(value: Any) -> str:
    if isinstance(value, memoryview):
        value = value.tobytes()
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


# --- refresh_tokens as OS processes ---------------------------------------------------------


def portal_env(sandbox: SandboxProcess, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        # Exactly this environment: no developer .env in the project folder.
        "JIRACONNECT_ENV_FILE": "",
        "DATABASE_URL": database_url(),
        "TEST_ATLASSIAN_SERVER_URL": sandbox.url,
        **extra,
    }


@dataclass
class RunResult:
    name: str
    returncode: int
    stdout: str
    stderr: str

    @property
    def summary(self) -> dict[str, Any]:
        lines = self.stdout.strip().splitlines()
        assert lines, f"{self.name}: no summary (exit {self.returncode}): {self.stderr[-2000:]}"
        summary: dict[str, Any] = json.loads(lines[-1])
        return summary


class RefreshProcess:
    """One `manage.py refresh_tokens --json …`; its output goes to files in `log_dir`.
    `env` adds to (or overrides) the portal's environment."""

    def __init__(
        self,
        sandbox: SandboxProcess,
        log_dir: Path,
        name: str,
        *args: str,
        unsafe: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        # The control run: the same command with the refresh claim switched off.
        launcher = str(unsafe_launcher.SCRIPT) if unsafe else "manage.py"
        self.name = name
        self.out = log_dir / f"{name}.out"
        self.err = log_dir / f"{name}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.popen = subprocess.Popen(
                [sys.executable, launcher, "refresh_tokens", "--json", *args],
                cwd=PROJECT,
                # Its sessions show in pg_stat_activity as refresh-<name>.
                env=portal_env(sandbox, DATABASE_URL=named_database_url(f"refresh-{name}"), **(env or {})),
                stdout=out,
                stderr=err,
            )

    def wait(self, timeout: float = 600) -> RunResult:
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise
        return RunResult(self.name, code, self.out.read_text(errors="replace"), self.err.read_text(errors="replace"))

    def kill_9(self) -> int:
        self.popen.send_signal(signal.SIGKILL)
        return self.popen.wait(timeout=30)


def refresh_tokens(sandbox: SandboxProcess, log_dir: Path, name: str, *args: str, **env: str) -> RunResult:
    return RefreshProcess(sandbox, log_dir, name, *args, env=env).wait()


def connection_sampler() -> ConnectionSampler:
    """Samples the test database's sessions (bench.harness.ConnectionSampler)."""
    return ConnectionSampler(url=database_url(), database=str(db_connection.settings_dict["NAME"]))


def named_database_url(application_name: str) -> str:
    """The test database's URL for a child process whose sessions pg_stat_activity shows
    under `application_name` (PostgreSQL: connections counted per process; SQLite has no
    sessions to name)."""
    if db_connection.vendor != "postgresql":
        return database_url()
    return with_application_name(database_url(), application_name)


class WebProcess:
    """The portal under gunicorn (one worker, as deployed), on the test database."""

    def __init__(self, sandbox: SandboxProcess, log_dir: Path, *, application_name: str = "web") -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        self.log = log_dir / "web.err"
        env = portal_env(sandbox, DATABASE_URL=named_database_url(application_name))
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

CHUNK = 24
_URLSAFE_RUN = re.compile(rf"[A-Za-z0-9_-]{{{CHUNK},}}")


class SecretScanner:
    """Finds any issued secret, or any fragment of 47+ characters of one, in text.

    Sandbox tokens are JWT-shaped (header.payload.signature, url-safe alphabet) and the
    header is the same in every token, so it is no secret. Each secret part is cut into
    aligned 24-character chunks: any 47-character fragment holds a whole chunk, found
    by sliding over the url-safe runs of the text. Set lookups keep 10,000 secrets and
    megabytes of text to seconds.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if s})
        owners: dict[str, set[str]] = {}
        for secret in self.secrets:
            for part in secret.split("."):
                owners.setdefault(part, set()).add(secret)
        self.chunks: dict[str, str] = {}
        for part, holders in owners.items():
            if len(holders) > 1 or len(part) < CHUNK:
                continue
            (secret,) = holders
            for start in range(0, len(part) - CHUNK + 1, CHUNK):
                self.chunks[part[start : start + CHUNK]] = secret
        chunked = set(self.chunks.values())
        # Short secrets (the client secret) are also searched whole.
        self.whole = [s for s in self.secrets if s not in chunked or len(s) < 2 * CHUNK]

    def hits(self, text: str) -> set[str]:
        found = {secret for secret in self.whole if secret in text}
        for run in _URLSAFE_RUN.findall(text):
            for start in range(len(run) - CHUNK + 1):
                secret = self.chunks.get(run[start : start + CHUNK])
                if secret is not None:
                    found.add(secret)
        return found

    def assert_clean(self, texts: dict[str, str]) -> dict[str, int]:
        """No secret in any of `texts` (name → text); returns what was scanned."""
        assert self.secrets, "nothing to look for: the scan would pass vacuously"
        # The scanner must see a leak when there is one: a fragment of the last token.
        canary = self.secrets[-1]
        assert self.hits(f"x{canary[len(canary) // 3 : len(canary) // 3 + 60]}x") or self.hits(canary)
        leaks = {name: len(found) for name, text in texts.items() if (found := self.hits(text))}
        assert not leaks, f"secrets found in: {leaks}"
        return {"secrets": len(self.secrets), "texts": len(texts), "bytes": sum(len(t) for t in texts.values())}


@contextmanager
def logging_everything(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every logger at DEBUG, and SQL with its parameters (tokens only as ciphertext) from
    every database connection of every thread: a live server's requests run in their own."""
    caplog.set_level(logging.DEBUG)
    # Loggers with their own level (urllib3, django) would drop DEBUG records otherwise.
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger):
            caplog.set_level(logging.DEBUG, logger=name)
    # What force_debug_cursor does for one connection, for all of them.
    with mock.patch.object(BaseDatabaseWrapper, "queries_logged", property(lambda self: True)):
        yield caplog


def log_texts(log_dir: Path) -> dict[str, str]:
    """Every refresh_tokens process's stdout and stderr kept in `log_dir`."""
    return {
        path.name: path.read_text(errors="replace")
        for path in sorted(log_dir.iterdir())
        if path.suffix in (".out", ".err")
    }


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
