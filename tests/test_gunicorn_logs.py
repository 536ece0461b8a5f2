"""gunicorn, as the README deploys it, keeps the OAuth code out of its access log."""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
from pathlib import Path

from sandbox.testing import free_port
from tests.support.processes import PROJECT, child_env, production_env
from tests.support.secrets import assert_no_secrets

CODE = "code-that-must-not-be-logged-3f9a"
STATE = "state-that-must-not-be-logged-b71c"


def get(port: int, path: str) -> int:
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path, headers={"Host": "portal.example.com", "Referer": f"https://x/?code={CODE}"})
            status = conn.getresponse().status
            conn.close()
            return status
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_the_access_log_shows_the_callback_path_without_its_code_or_state(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "access.log"
    # No -c: gunicorn reads gunicorn.conf.py from the working directory, as in production.
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "jiraconnect.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--access-logfile",
            str(log),
        ],
        cwd=PROJECT,
        env=child_env(production_env(tmp_path / "db.sqlite3")),
        stderr=subprocess.DEVNULL,
    )
    try:
        get(port, f"/integrations/jira/callback/?code={CODE}&state={STATE}")
    finally:
        server.terminate()
        server.wait(timeout=30)

    written = log.read_text()
    assert "GET /integrations/jira/callback/ HTTP/1.1" in written
    assert_no_secrets(written, CODE, STATE)
