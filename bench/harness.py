"""What every benchmark stands on: the sandbox process (sandbox.testing), the bench database,
the portal's environment, `manage.py` runs with their CPU time, and the results file.

The portal is configured as in production (jiraconnect.settings from the environment,
DEBUG off, behind a TLS-terminating proxy), pointed at a sandbox process; nothing is
patched.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from sandbox import config as sandbox_config
from sandbox.testing import SandboxProcess

if TYPE_CHECKING:
    from django.test import Client

    from accounts.models import User

BASE_DIR = Path(__file__).resolve().parent.parent
RESULTS_FILE = BASE_DIR / "bench" / "results" / "latest.json"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_jiraconnect"

# DEBUG off requires an https callback. The bench never runs the browser flow (grants
# are minted through the sandbox's control endpoint), so this URL is never visited.
REDIRECT_URI = "https://127.0.0.1/integrations/jira/callback/"
# The portal's one allowed host; every request says it came through TLS, as a proxy's
# X-Forwarded-Proto would (SECURE_PROXY_SSL_HEADER=true), or SECURE_SSL_REDIRECT
# would answer each one with a redirect.
PORTAL_HOST = "127.0.0.1"
FORWARDED_HEADERS = {"X-Forwarded-Proto": "https"}
# Minting 100,000 grants in one control call takes a while.
CONTROL_TIMEOUT = 120.0


class BenchError(Exception):
    """The bench cannot run here (no PostgreSQL, the sandbox did not start…)."""


# --- Results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the printed table. `met` is None where there is no goal."""

    metric: str
    value: str
    goal: str = ""
    met: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "goal": self.goal, "met": self.met}


@dataclass
class Outcome:
    name: str
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"table": [row.as_dict() for row in self.rows], **self.data}


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (p99 of 1,000 samples is the 990th smallest)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


def verdict(met: bool | None) -> str:
    return "" if met is None else ("met" if met else "MISSED")


def format_table(outcomes: Sequence[Outcome]) -> str:
    header = ("benchmark", "metric", "value", "goal", "")
    lines = [header]
    for outcome in outcomes:
        for row in outcome.rows:
            lines.append((outcome.name, row.metric, row.value, row.goal, verdict(row.met)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    rendered = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in lines]
    rendered.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(rendered)


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        cpu = match.group(1).strip() if match else ""
    except OSError:
        pass
    memory_gb = 0.0
    try:
        match = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
        memory_gb = round(int(match.group(1)) / 1024 / 1024, 1) if match else 0.0
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def write_results(outcomes: Sequence[Outcome], *, meta: dict[str, Any], path: Path = RESULTS_FILE) -> None:
    """Merge into the results file: running one benchmark keeps the others' last figures."""
    existing: dict[str, Any] = {}
    if path.is_file():
        try:
            existing = json.loads(path.read_text())
        except ValueError:
            existing = {}
    benchmarks = existing.get("benchmarks", {}) if isinstance(existing.get("benchmarks"), dict) else {}
    for outcome in outcomes:
        benchmarks[outcome.name] = {"measured_at": meta["date"], **outcome.as_dict()}
    document = {**meta, "benchmarks": benchmarks}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(document, indent=2, default=str) + "\n")
    temporary.replace(path)


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def start_sandbox() -> SandboxProcess:
    """`python -m sandbox` with its own credentials (the portal is given them too)."""
    try:
        return SandboxProcess(timeout=CONTROL_TIMEOUT).start()
    except RuntimeError as exc:
        raise BenchError(str(exc)) from None


# --- The portal ---------------------------------------------------------------------------


def bench_database_url() -> str:
    return os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)


def with_application_name(url: str, name: str) -> str:
    """`url` for a process whose PostgreSQL sessions show as `name` in pg_stat_activity."""
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode({"application_name": name})) if q)
    return urlunsplit(parts._replace(query=query))


def ensure_database(url: str) -> None:
    """Create the bench database if it does not exist (PostgreSQL only)."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise BenchError(f"the benchmarks need PostgreSQL; BENCH_DATABASE_URL is {parts.scheme}://")
    name = parts.path.lstrip("/")
    maintenance = urlunsplit(parts._replace(path="/postgres"))
    try:
        with psycopg.connect(maintenance, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        raise BenchError(f"cannot reach PostgreSQL at {parts.hostname}:{parts.port}: {exc}") from None


def configure_portal(*, sandbox_url: str, db_url: str) -> None:
    """The production environment jiraconnect.settings reads, then django.setup(),
    migrate and collectstatic (DEBUG off serves static files from the manifest).

    Child processes (manage.py, gunicorn) inherit the same environment.
    """
    os.environ.update(portal_environment(sandbox_url=sandbox_url, db_url=db_url))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    call_command("createcachetable", verbosity=0)
    call_command("collectstatic", verbosity=0, interactive=False)


def portal_environment(*, sandbox_url: str, db_url: str) -> dict[str, str]:
    """What production sets (DEBUG off, fresh keys), pointed at the sandbox."""
    from cryptography.fernet import Fernet

    return {
        "DJANGO_SETTINGS_MODULE": "jiraconnect.settings",
        # Exactly this environment: a developer's .env must not leak into the figures.
        "JIRACONNECT_ENV_FILE": "",
        "DEBUG": "false",
        # Fresh keys per run: every benchmark seeds its own rows and sessions.
        "SECRET_KEY": secrets.token_urlsafe(50),
        "FERNET_KEYS": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": PORTAL_HOST,
        "SECURE_PROXY_SSL_HEADER": "true",
        "DATABASE_URL": db_url,
        "ATLASSIAN_CLIENT_ID": sandbox_config.CLIENT_ID,
        "ATLASSIAN_CLIENT_SECRET": sandbox_config.CLIENT_SECRET,
        "ATLASSIAN_REDIRECT_URI": REDIRECT_URI,
        "ATLASSIAN_AUTH_URL": sandbox_url,
        "ATLASSIAN_API_URL": sandbox_url,
        "EMAIL_URL": "consolemail://",
        "LOG_LEVEL": "WARNING",
    }


def signed_in_client(user: User) -> Client:
    """A test client signed in as `user`, asking as a browser behind the TLS proxy would."""
    from django.test import Client

    client = Client(SERVER_NAME=PORTAL_HOST, headers=FORWARDED_HEADERS)
    client.force_login(user)
    return client


def reset_data() -> None:
    """Empty every table a benchmark fills, so each starts from the same state."""
    from django.contrib.sessions.models import Session
    from django.db import connection

    from accounts.models import User
    from integrations.models import ConnectionEvent, JiraConnection, JiraSite

    tables = [m._meta.db_table for m in (ConnectionEvent, JiraSite, JiraConnection, Session, User)]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            names = ", ".join(connection.ops.quote_name(t) for t in tables)
            cursor.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        else:
            for table in tables:
                cursor.execute(f"DELETE FROM {connection.ops.quote_name(table)}")  # noqa: S608


def analyze(*tables: str) -> None:
    """What autovacuum would do a minute after a bulk load: fresh planner statistics."""
    from django.db import connection

    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(table)}")


class ConnectionSampler:
    """Samples pg_stat_activity every `every` seconds from a thread with its own plain
    psycopg connection (`url`), until stopped: the peak number of sessions on `database`,
    per application_name and in all, and on the whole server. Child processes given a
    DATABASE_URL ending in `?application_name=NAME` are counted under NAME."""

    def __init__(self, *, url: str, database: str, every: float = 0.01) -> None:
        self.every = every
        self.url = url
        self.database = database
        self.peak_by_name: dict[str, int] = {}
        self.peak_database = 0
        self.peak_server = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="pg-sampler", daemon=True)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _sample(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            own = conn.info.backend_pid
            while not self._stop.is_set():
                rows = conn.execute(
                    "SELECT datname, application_name, count(*) FROM pg_stat_activity"
                    " WHERE backend_type = 'client backend' AND pid <> %s GROUP BY 1, 2",
                    (own,),
                ).fetchall()
                on_database = 0
                for datname, name, count in rows:
                    if datname == self.database:
                        on_database += count
                        self.peak_by_name[name] = max(self.peak_by_name.get(name, 0), count)
                self.peak_database = max(self.peak_database, on_database)
                self.peak_server = max(self.peak_server, sum(count for _, _, count in rows) + 1)
                self.samples += 1
                self._stop.wait(self.every)

    def peak(self, prefix: str) -> int:
        """The highest session count seen for any one application_name starting with `prefix`."""
        return max((n for name, n in self.peak_by_name.items() if name.startswith(prefix)), default=0)


@dataclass(frozen=True)
class CommandRun:
    args: tuple[str, ...]
    returncode: int
    wall_seconds: float
    cpu_seconds: float
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        """The last stdout line, as printed by `--json`."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        if not lines:
            raise BenchError(f"manage.py {' '.join(self.args)} printed nothing; stderr: {self.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(lines[-1])
        return result


def manage_parallel(
    *commands: Sequence[str], timeout: float | None = None, envs: Sequence[dict[str, str]] | None = None
) -> list[CommandRun]:
    """Several `manage.py` processes started together, as cron on several hosts would;
    CPU time is their total (the kernel only reports waited children as a sum). `envs`,
    one per command, adds to this process's environment."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(envs[n] if envs else {})},
        )
        for n, args in enumerate(commands)
    ]
    outputs = [process.communicate(timeout=timeout) for process in processes]
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return [
        CommandRun(tuple(args), process.returncode, wall, cpu, out, err)
        for args, process, (out, err) in zip(commands, processes, outputs, strict=True)
    ]


def manage(*args: str, timeout: float | None = None) -> CommandRun:
    """Run `manage.py ARGS` as cron would: a new process; its wall and CPU time measured."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return CommandRun(tuple(args), completed.returncode, wall, cpu, completed.stdout, completed.stderr)
