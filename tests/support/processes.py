"""manage.py in child processes that see only the environment a test gives them.

The settings read an optional .env from the project folder; JIRACONNECT_ENV_FILE=""
switches that off, so a developer's .env cannot make these tests pass or fail.
`RefreshProcess` runs `refresh_tokens` on the test database, as another host would.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography.fernet import Fernet
from django.db import connection as db_connection

from tests.support.unsafe import SCRIPT as UNSAFE_MANAGE

PROJECT = Path(__file__).resolve().parents[2]
GATED_MANAGE = Path(__file__).with_name("gated_manage.py")


def production_env(database: Path) -> dict[str, str]:
    """A complete production (DEBUG off) configuration with fresh strong keys."""
    return {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "FERNET_KEYS": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "portal.example.com",
        "DATABASE_URL": f"sqlite:///{database}",
    }


def child_env(env: dict[str, str]) -> dict[str, str]:
    """`env` and the bare minimum to run the project, none of the caller's environment."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DJANGO_SETTINGS_MODULE": "jiraconnect.settings",
        "JIRACONNECT_ENV_FILE": "",
        "PYTHONDONTWRITEBYTECODE": "1",
        **env,
    }


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def improperly_configured(result: subprocess.CompletedProcess[str]) -> str:
    """The configuration error a failed start-up ended with (manage.py exits 2 on one)."""
    assert result.returncode == 2, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    prefix = "Configuration error: "
    assert last.startswith(prefix), result.stderr
    return last.removeprefix(prefix)


def settings_seen(env: dict[str, str], *names: str) -> dict[str, Any]:
    """The named settings as the child process sees them."""
    code = (
        "import json; from django.conf import settings as s; "
        f"print(json.dumps({{k: getattr(s, k) for k in {list(names)!r}}}))"
    )
    result = manage("shell", "-c", code, env=env)
    assert result.returncode == 0, result.stderr
    seen: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return seen


# --- The test settings on the test database, pointed at a sandbox -------------------------


def database_url() -> str:
    """The live (test) database as a URL for child processes."""
    db = db_connection.settings_dict
    if db_connection.vendor == "sqlite":
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def named_database_url(application_name: str) -> str:
    """The test database's URL for a child process whose sessions pg_stat_activity shows
    under `application_name` (PostgreSQL; SQLite has no sessions to name)."""
    url = database_url()
    if not url.startswith("postgres"):
        return url
    from bench.harness import with_application_name

    return with_application_name(url, application_name)


def portal_env(sandbox_url: str) -> dict[str, str]:
    """tests/settings.py in a child process: this test database, Atlassian at `sandbox_url`."""
    return {
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url(),
        "TEST_ATLASSIAN_SERVER_URL": sandbox_url,
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

    `gated`: Django is set up first and the command waits for `release()`, so that
    several processes' start-up times (seconds apart on a loaded machine) cannot
    serialise the race under test. `unsafe`: the control run, with the claim switched off.
    """

    def __init__(
        self,
        sandbox_url: str,
        log_dir: Path,
        name: str,
        *args: str,
        gated: bool = False,
        unsafe: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        assert not (gated and unsafe), "one launcher at a time"
        log_dir.mkdir(parents=True, exist_ok=True)
        launcher = str(GATED_MANAGE) if gated else str(UNSAFE_MANAGE) if unsafe else "manage.py"
        self.name = name
        self.out = log_dir / f"{name}.out"
        self.err = log_dir / f"{name}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.popen = subprocess.Popen(
                [sys.executable, launcher, "refresh_tokens", "--json", *args],
                cwd=PROJECT,
                # Its PostgreSQL sessions show in pg_stat_activity as refresh-<name>; `env`
                # adds to (or overrides) the portal's environment.
                env=child_env(
                    {**portal_env(sandbox_url), "DATABASE_URL": named_database_url(f"refresh-{name}"), **(env or {})}
                ),
                stdin=subprocess.PIPE if gated else subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )

    def wait_until_ready(self, timeout: float = 60) -> None:
        """Until a gated process has set Django up and waits for its release."""
        deadline = time.monotonic() + timeout
        while not self.out.read_text(errors="replace").startswith("ready\n"):
            code = self.popen.poll()
            assert code is None, f"{self.name} exited {code} before it was ready: {self.err.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"{self.name} was not ready in time"
            time.sleep(0.02)

    def release(self) -> None:
        assert self.popen.stdin is not None, "not a gated process"
        self.popen.stdin.write(b"go\n")
        self.popen.stdin.close()

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


def release_together(processes: list[RefreshProcess]) -> None:
    """Once every gated process is set up and waiting, let them all go at once."""
    for process in processes:
        process.wait_until_ready()
    for process in processes:
        process.release()


def log_texts(log_dir: Path) -> dict[str, str]:
    """Every RefreshProcess's stdout and stderr kept in `log_dir`."""
    return {
        path.name: path.read_text(errors="replace")
        for path in sorted(log_dir.iterdir())
        if path.suffix in (".out", ".err")
    }
