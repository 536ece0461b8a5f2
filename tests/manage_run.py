"""Run manage.py in a child process that sees only the environment a test gives it.

The settings read an optional .env from the project folder; JIRACONNECT_ENV_FILE=""
switches that off, so a developer's .env cannot make these tests pass or fail.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

PROJECT = Path(__file__).resolve().parent.parent


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
