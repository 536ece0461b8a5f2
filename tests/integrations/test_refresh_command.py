"""`manage.py refresh_tokens`: options, summary, exit codes, and the worker threads.

Workers run in their own threads with their own database connections, so these tests
use real transactions (transaction=True): a worker cannot see a test's open transaction.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import responses
from django.conf import settings
from django.core import mail
from django.core.management import CommandError, call_command
from django.test import override_settings

from accounts.models import User
from integrations.lifecycle import run as refresh_run
from integrations.management.commands.refresh_tokens import progress_line
from integrations.models import ConnectionEvent, ConnectionStatus, JiraConnection
from tests.concurrency.strict import StrictTokenServer, command_env
from tests.conftest import TOKEN_URL, ConnectionFactory
from tests.integrations.refresh_support import FakeClock, fresh, install_clock, token_calls, token_reply
from tests.manage_run import manage, production_env

pytestmark = pytest.mark.django_db(transaction=True)


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(*args: str, stderr: io.StringIO | None = None) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of one refresh_tokens run."""
    out, err = io.StringIO(), stderr if stderr is not None else io.StringIO()
    try:
        call_command("refresh_tokens", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def run_json(*args: str) -> tuple[int, dict[str, Any]]:
    code, out, _err = run("--json", *args)
    return code, json.loads(out)


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    return install_clock(monkeypatch)


@pytest.fixture
def expired(frozen: FakeClock) -> dict[str, Any]:
    return {"access_token_expires_at": frozen.now() - timedelta(minutes=1)}


def refresh_replies(mocked: responses.RequestsMock, count: int) -> None:
    for n in range(count):
        mocked.post(TOKEN_URL, json=token_reply(n))


def test_due_connections_are_refreshed_and_summarised(
    alice: User,
    make_connection: ConnectionFactory,
    mocked: responses.RequestsMock,
    frozen: FakeClock,
    expired: dict[str, Any],
) -> None:
    due = [make_connection(alice, **expired) for _ in range(3)]
    soon = make_connection(alice, access_token_expires_at=frozen.now() + timedelta(minutes=10))
    later = make_connection(alice, access_token_expires_at=frozen.now() + timedelta(minutes=50))
    refresh_replies(mocked, 4)

    code, out, err = run("--concurrency", "3")

    assert code == 0
    assert (
        "Due: 4\nRefreshed: 4\nNot due: 0\nClaimed elsewhere: 0\nSuperseded: 0\n"
        "Transient failures: 0\nNeeds reconnect: 0"
    ) in out
    assert "connections/s" in out
    assert len(token_calls(mocked)) == 4
    assert {fresh(c).version for c in [*due, soon]} == {2}
    assert fresh(later).version == 1
    assert err == ""


def test_json_summary_carries_every_count(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, expired: dict[str, Any]
) -> None:
    make_connection(alice, **expired)
    dead = make_connection(alice, **expired)
    failing = make_connection(alice, **expired)

    def reply(request: Any) -> tuple[int, dict[str, str], str]:
        token = json.loads(request.body)["refresh_token"]
        if token == dead.refresh_token:
            return 403, {}, '{"error": "invalid_grant"}'
        if token == failing.refresh_token:
            return 502, {}, "bad gateway"
        return 200, {}, json.dumps(token_reply(1))

    mocked.add_callback(responses.POST, TOKEN_URL, callback=reply)

    code, summary = run_json()

    assert code == 1
    assert {k: summary[k] for k in ("due", "refreshed", "transient_failures", "needs_reconnect", "skipped")} == {
        "due": 3,
        "refreshed": 1,
        "transient_failures": 1,
        "needs_reconnect": 1,
        "skipped": 0,
    }
    assert summary["configuration_error"] is None
    assert {"not_due", "claimed_elsewhere", "elapsed_seconds", "rate_per_second"} <= summary.keys()


def test_exit_code_is_1_while_a_transient_failure_remains(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, expired: dict[str, Any]
) -> None:
    connection = make_connection(alice, **expired)
    mocked.post(TOKEN_URL, status=503, body="down")

    code, out, _err = run()

    assert code == 1
    assert "Transient failures: 1" in out
    assert fresh(connection).status == ConnectionStatus.REFRESH_FAILING


def test_refused_client_credentials_stop_the_run_with_exit_code_2(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, expired: dict[str, Any]
) -> None:
    connections = [make_connection(alice, **expired) for _ in range(5)]
    mocked.post(TOKEN_URL, status=401, json={"error": "access_denied", "error_description": "Unauthorized"})

    code, out, err = run("--concurrency", "1")

    assert code == 2
    assert "Configuration error: Atlassian refused this portal's client credentials" in err
    assert "ATLASSIAN_CLIENT_SECRET" in err
    assert "Skipped (run stopped): 5" in out
    # Stopped at once: one token request, and no connection marked or changed.
    assert len(token_calls(mocked)) == 1
    assert {(c.status, c.version, c.failure_count) for c in map(fresh, connections)} == {
        (ConnectionStatus.ACTIVE, 1, 0)
    }
    assert not ConnectionEvent.objects.exists()
    assert not mail.outbox


def test_refused_client_credentials_stop_every_worker_from_taking_new_work(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, expired: dict[str, Any]
) -> None:
    for _ in range(12):
        make_connection(alice, **expired)
    mocked.post(TOKEN_URL, status=401, json={"error": "access_denied"})

    code, summary = run_json("--concurrency", "4")

    assert code == 2
    # Each of the 4 workers may have one request in flight when the first refusal lands.
    assert 1 <= len(token_calls(mocked)) <= 4
    assert summary["skipped"] == 12
    assert summary["refreshed"] == 0
    assert "client credentials" in summary["configuration_error"]


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["run", "dry run"])
@pytest.mark.parametrize("missing", ["ATLASSIAN_CLIENT_ID", "ATLASSIAN_CLIENT_SECRET"])
def test_missing_client_credentials_exit_2_naming_the_variable(
    alice: User,
    make_connection: ConnectionFactory,
    mocked: responses.RequestsMock,
    expired: dict[str, Any],
    missing: str,
    dry_run: list[str],
) -> None:
    connection = make_connection(alice, **expired)

    with override_settings(**{missing: ""}):
        code, _out, err = run(*dry_run)

    assert code == 2
    assert f"{missing} not set" in err
    assert len(mocked.calls) == 0
    assert fresh(connection).version == connection.version


def test_a_broken_setting_exits_2_with_the_variable_named_not_a_traceback(tmp_path: Path) -> None:
    # Cron alerts on exit status 2: a portal that cannot even start must raise it too.
    env = production_env(tmp_path / "db.sqlite3")
    del env["SECRET_KEY"]

    result = manage("refresh_tokens", env=env)

    assert result.returncode == 2
    assert result.stderr.startswith("Configuration error: SECRET_KEY")
    assert "Traceback" not in result.stderr


def test_due_within_widens_what_counts_as_due(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    in_twenty = make_connection(alice, access_token_expires_at=frozen.now() + timedelta(minutes=20))
    refresh_replies(mocked, 1)

    assert run_json()[1]["due"] == 0
    code, summary = run_json("--due-within", "30")

    assert (code, summary["refreshed"]) == (0, 1)
    assert fresh(in_twenty).version == in_twenty.version + 1


def test_dry_run_lists_due_connections_and_changes_nothing(
    alice: User,
    bob: User,
    make_connection: ConnectionFactory,
    mocked: responses.RequestsMock,
    frozen: FakeClock,
    expired: dict[str, Any],
) -> None:
    gone = make_connection(alice, **expired, last_used_at=frozen.now() - timedelta(hours=3))
    soon = make_connection(bob, access_token_expires_at=frozen.now() + timedelta(minutes=5))
    idle = make_connection(
        bob,
        access_token_expires_at=frozen.now() + timedelta(minutes=50),
        tokens_issued_at=frozen.now() - timedelta(days=40),
        last_used_at=None,
    )
    failing = make_connection(
        alice,
        access_token_expires_at=frozen.now() + timedelta(minutes=50),
        status=ConnectionStatus.REFRESH_FAILING,
        next_attempt_at=frozen.now() - timedelta(minutes=1),
    )
    make_connection(alice)  # not due
    make_connection(alice, **expired, last_used_at=frozen.now() - timedelta(days=2))  # unused: on demand only
    before = list(JiraConnection.objects.order_by("pk").values())

    code, out, _err = run("--dry-run")

    assert code == 0
    lines = out.strip().splitlines()
    expires = f"{gone.access_token_expires_at:%Y-%m-%d %H:%M:%S} UTC"
    assert lines[0] == f"{gone.pk}\talice@example.com\t{expires}\twarm: used 3 h ago, access token expired"
    assert lines[1].startswith(f"{soon.pk}\tbob@example.com\t")
    assert lines[1].endswith("\twarm: used 0 min ago, access token expires soon")
    assert sorted(lines[2:4]) == sorted(
        [
            f"{idle.pk}\tbob@example.com\t{idle.access_token_expires_at:%Y-%m-%d %H:%M:%S} UTC"
            "\tkeep-alive: refresh token unused for 40 days",
            f"{failing.pk}\talice@example.com\t{failing.access_token_expires_at:%Y-%m-%d %H:%M:%S} UTC"
            "\tretry: the last refresh failed, its backoff has ended",
        ]
    )
    assert lines[4] == "Dry run: 4 connection(s) due; nothing changed."
    assert len(mocked.calls) == 0
    assert list(JiraConnection.objects.order_by("pk").values()) == before

    code, out, _err = run("--dry-run", "--json")
    listed = json.loads(out)
    assert [row["id"] for row in listed["connections"]][:2] == [gone.pk, soon.pk]
    assert listed["connections"][0] == {
        "id": gone.pk,
        "user": "alice@example.com",
        "expires_at": gone.access_token_expires_at.isoformat(),
        "reason": "warm: used 3 h ago, access token expired",
    }


def test_user_option_refreshes_only_that_users_connections(
    alice: User, bob: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, expired: dict[str, Any]
) -> None:
    mine = make_connection(alice, **expired)
    theirs = make_connection(bob, **expired)
    refresh_replies(mocked, 1)

    code, summary = run_json("--user", "ALICE@example.com")

    assert (code, summary["refreshed"]) == (0, 1)
    assert (fresh(mine).version, fresh(theirs).version) == (2, 1)


def test_limit_refreshes_the_soonest_expiring_first(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    connections = [
        make_connection(alice, access_token_expires_at=frozen.now() - timedelta(minutes=minutes))
        for minutes in (1, 30, 10)
    ]
    refresh_replies(mocked, 2)

    code, summary = run_json("--limit", "2")

    assert (code, summary["due"], summary["refreshed"]) == (0, 2, 2)
    assert [fresh(c).version for c in connections] == [1, 2, 2]


def test_max_idle_picks_an_idle_connection_whose_access_token_is_not_due(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, frozen: FakeClock
) -> None:
    idle = make_connection(
        alice,
        access_token_expires_at=frozen.now() + timedelta(minutes=50),
        tokens_issued_at=frozen.now() - timedelta(days=31),
    )
    refresh_replies(mocked, 1)

    assert run_json("--max-idle", "60")[1]["due"] == 0
    assert len(mocked.calls) == 0

    code, summary = run_json()
    assert (code, summary["refreshed"]) == (0, 1)
    assert fresh(idle).tokens_issued_at == frozen.now()


def test_needs_reconnect_connections_are_skipped(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, expired: dict[str, Any]
) -> None:
    make_connection(alice, status=ConnectionStatus.NEEDS_RECONNECT, **expired)

    assert run_json("--ignore-backoff")[1]["due"] == 0
    assert len(mocked.calls) == 0


def test_backoff_is_respected_unless_ignored(
    alice: User,
    make_connection: ConnectionFactory,
    mocked: responses.RequestsMock,
    frozen: FakeClock,
    expired: dict[str, Any],
) -> None:
    failing = make_connection(
        alice,
        status=ConnectionStatus.REFRESH_FAILING,
        failure_count=2,
        next_attempt_at=frozen.now() + timedelta(minutes=3),
        **expired,
    )
    refresh_replies(mocked, 1)

    assert run_json()[1]["due"] == 0
    assert len(mocked.calls) == 0

    code, summary = run_json("--ignore-backoff")
    assert (code, summary["refreshed"]) == (0, 1)
    assert fresh(failing).status == ConnectionStatus.ACTIVE


def test_dead_grant_emails_the_user_once_across_runs(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, expired: dict[str, Any]
) -> None:
    make_connection(alice, **expired)
    mocked.post(TOKEN_URL, status=403, json={"error": "unauthorized_client"})

    first = run_json()[1]
    second = run_json("--ignore-backoff")[1]

    assert (first["needs_reconnect"], second["due"]) == (1, 0)
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["alice@example.com"]


def test_claimed_connection_is_reported_claimed_elsewhere(
    alice: User,
    make_connection: ConnectionFactory,
    mocked: responses.RequestsMock,
    frozen: FakeClock,
    expired: dict[str, Any],
) -> None:
    make_connection(
        alice,
        claim_id="6f1c3a52-0000-4000-8000-000000000001",
        claimed_until=frozen.now() + timedelta(minutes=1),
        **expired,
    )

    code, summary = run_json()

    assert (code, summary["claimed_elsewhere"]) == (0, 1)
    assert len(mocked.calls) == 0


def test_every_worker_thread_closes_its_database_connections(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, expired: dict[str, Any]
) -> None:
    for _ in range(6):
        make_connection(alice, **expired)
    refresh_replies(mocked, 6)
    closed_by: list[str] = []
    real_close_all = refresh_run.connections.close_all

    def close_all() -> None:
        closed_by.append(threading.current_thread().name)
        real_close_all()

    with mock.patch.object(refresh_run.connections, "close_all", close_all):
        code, summary = run_json("--concurrency", "3")

    assert (code, summary["refreshed"]) == (0, 6)
    assert len(closed_by) == 3
    assert len(set(closed_by)) == 3
    assert all(name.startswith("refresh") for name in closed_by)


def test_progress_goes_to_stderr_only_on_a_terminal(
    alice: User, make_connection: ConnectionFactory, mocked: responses.RequestsMock, expired: dict[str, Any]
) -> None:
    make_connection(alice, **expired)
    refresh_replies(mocked, 3)

    _code, _out, err = run()
    assert err == ""

    for _ in range(2):
        make_connection(alice, **expired)
    _code, out, err = run("--concurrency", "1", stderr=TTY())
    frames = err.split("\r")[1:]
    assert [frame.split()[1] for frame in frames] == ["1/2", "2/2"]
    assert frames[0].startswith("[" + "#" * 15 + "." * 15 + "]")
    assert err.endswith("\n")
    assert "\r" not in out


@pytest.mark.parametrize(
    ("done", "total", "elapsed", "line"),
    [
        (0, 1000, 0.0, "[..........]    0/1000   0%  0.0/s  "),
        (300, 1000, 2.5, "[###.......]  300/1000  30%  120.0/s  ETA 6s"),
        (1000, 1000, 5.0, "[##########] 1000/1000 100%  200.0/s  "),
    ],
)
def test_progress_line_shows_bar_count_percent_rate_and_eta(done: int, total: int, elapsed: float, line: str) -> None:
    assert progress_line(done, total, elapsed=elapsed, width=10) == line


@pytest.mark.parametrize("bad", [["--concurrency", "0"], ["--limit", "-1"], ["--due-within", "soon"]])
def test_bad_option_values_are_refused(bad: list[str]) -> None:
    with pytest.raises(CommandError, match="Error: argument"):
        call_command("refresh_tokens", *bad, stdout=io.StringIO(), stderr=io.StringIO())


def test_exit_code_of_the_real_process_is_2_when_atlassian_refuses_the_client(
    alice: User, make_connection: ConnectionFactory, expired: dict[str, Any]
) -> None:
    with StrictTokenServer(client_secret="a-different-secret") as server:
        make_connection(alice, **expired)

        result = subprocess.run(
            [sys.executable, "manage.py", "refresh_tokens"],
            cwd=settings.BASE_DIR,
            env=command_env(server),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert result.returncode == 2, result.stderr
    assert "Configuration error: Atlassian refused this portal's client credentials" in result.stderr
    assert "Refreshed: 0" in result.stdout
    assert "test-client-secret-do-not-log-a8f3c61e9b2d4075e1c9f0a7b3d5e2c4f6" not in result.stdout + result.stderr
