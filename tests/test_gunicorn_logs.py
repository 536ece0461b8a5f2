"""gunicorn, as the README deploys it, keeps the OAuth code out of its access log."""

from __future__ import annotations

from pathlib import Path

from tests.support.gunicorn import gunicorn, request
from tests.support.processes import production_env
from tests.support.secrets import assert_no_secrets

CODE = "code-that-must-not-be-logged-3f9a"
STATE = "state-that-must-not-be-logged-b71c"


def test_the_access_log_shows_the_callback_path_without_its_code_or_state(tmp_path: Path) -> None:
    log = tmp_path / "access.log"

    with gunicorn(production_env(tmp_path / "db.sqlite3"), "--access-logfile", str(log)) as port:
        request(
            port,
            f"/integrations/jira/callback/?code={CODE}&state={STATE}",
            {"Referer": f"https://x/?code={CODE}"},
        )

    written = log.read_text()
    assert "GET /integrations/jira/callback/ HTTP/1.1" in written
    assert_no_secrets(written, CODE, STATE)
