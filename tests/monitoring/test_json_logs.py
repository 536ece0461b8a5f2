"""LOG_FORMAT=json: one JSON object per line, the refresh's fields on its lines, no secret."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import responses

from accounts.models import User
from integrations.lifecycle.access import connection_access_token
from integrations.lifecycle.run import RunOptions, refresh_due
from monitoring.logs import RefreshContextFilter, json_formatter
from tests.support.atlassian import TOKEN_URL, token_reply
from tests.support.clock import FakeClock, install_clock
from tests.support.connections import ConnectionFactory
from tests.support.processes import manage, production_env, settings_seen
from tests.support.secrets import assert_no_secrets

OLD_ACCESS = "old-access-token-json-secret"
OLD_REFRESH = "old-refresh-token-json-secret"


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """The root logger's output as LOG_FORMAT=json writes it (formatter and filter of settings)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    handler.addFilter(RefreshContextFilter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def refresh_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [r for r in records(stream) if r["logger"] == "integrations.lifecycle.refresh"]


@pytest.mark.django_db
def test_every_refresh_line_carries_connection_outcome_and_duration_and_no_secret(
    alice: User,
    make_connection: ConnectionFactory,
    mocked: responses.RequestsMock,
    monkeypatch: pytest.MonkeyPatch,
    json_lines: io.StringIO,
) -> None:
    frozen: FakeClock = install_clock(monkeypatch)
    connection = make_connection(
        alice,
        access_token=OLD_ACCESS,
        refresh_token=OLD_REFRESH,
        access_token_expires_at=frozen.now() + timedelta(minutes=5),
    )
    # A lost reply (retried with the same token), then a server error, then success.
    mocked.post(TOKEN_URL, body=requests.ReadTimeout("read"))
    mocked.post(TOKEN_URL, json={"error": "server_error"}, status=500)
    refresh_due(RunOptions(concurrency=1))
    mocked.replace(responses.POST, TOKEN_URL, json=token_reply("json"))
    frozen.advance(minutes=10)
    connection_access_token(connection_id=connection.pk)

    lines = refresh_lines(json_lines)
    closing = [line for line in lines if "outcome" in line]
    assert [(line["outcome"], line["reason"], line["source"]) for line in closing] == [
        ("transient_failure", "transient", "scheduled"),
        ("recovered", "", "on_demand"),
    ]
    # The retry notice and the failure warning logged during the refresh carry its fields too.
    assert len(lines) > len(closing)
    for line in lines:
        assert line["connection_id"] == connection.pk
        assert isinstance(line["duration_ms"], int)
        assert {"time", "level", "message"} <= line.keys()
    assert_no_secrets(
        json_lines.getvalue(), OLD_ACCESS, OLD_REFRESH, "new-access-json-secret", "new-refresh-json-secret"
    )


@pytest.mark.django_db
def test_lines_outside_a_refresh_carry_no_refresh_fields(json_lines: io.StringIO) -> None:
    logging.getLogger("somewhere").warning("Something %s.", "happened")

    (line,) = records(json_lines)
    assert line["message"] == "Something happened."
    assert line["level"] == "WARNING"
    assert "connection_id" not in line


def test_log_format_json_is_what_the_process_writes(tmp_path: Path) -> None:
    env = {**production_env(tmp_path / "db.sqlite3"), "LOG_FORMAT": "json"}
    code = "import logging; logging.getLogger('probe').warning('hello %s', 'world', extra={'connection_id': 7})"

    result = manage("shell", "-c", code, env=env)

    assert result.returncode == 0, result.stderr
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["message"] == "hello world"
    assert line["logger"] == "probe"
    assert line["connection_id"] == 7


def test_plain_logs_are_the_default(tmp_path: Path) -> None:
    seen = settings_seen(production_env(tmp_path / "db.sqlite3"), "LOGGING")

    assert seen["LOGGING"]["handlers"]["console"]["formatter"] == "plain"
