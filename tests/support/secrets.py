"""The one leak check: no secret, nor any long fragment of one, in what a test captured.

`assert_no_secrets(texts, *secrets)` is used by every test that looks for leaked codes,
tokens, client secrets or passwords, from one page up to the proofs' megabytes of logs;
`logging_everything` and `raw_rows` capture what it searches.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from django.conf import settings
from django.db import connection as db_connection
from django.db.backends.base.base import BaseDatabaseWrapper

CHUNK = 24
_URLSAFE_RUN = re.compile(rf"[A-Za-z0-9_-]{{{CHUNK},}}")
INTEGRATION_TABLES = ("integrations_jiraconnection", "integrations_jirasite", "integrations_connectionevent")


class SecretScanner:
    """Finds any of `secrets`, or any fragment of 47+ characters of one, in text.

    Sandbox tokens are JWT-shaped (header.payload.signature, url-safe alphabet) and the
    header is the same in every token, so it is no secret. Each secret part is cut into
    aligned 24-character chunks: any 47-character fragment holds a whole chunk, found
    by sliding over the url-safe runs of the text. Set lookups keep 10,000 secrets and
    megabytes of text to seconds. Short secrets are searched whole.
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
        self.whole = [s for s in self.secrets if s not in chunked or len(s) < 2 * CHUNK]

    def hits(self, text: str) -> set[str]:
        found = {secret for secret in self.whole if secret in text}
        for run in _URLSAFE_RUN.findall(text):
            for start in range(len(run) - CHUNK + 1):
                secret = self.chunks.get(run[start : start + CHUNK])
                if secret is not None:
                    found.add(secret)
        return found


def assert_no_secrets(texts: str | Mapping[str, str], *secrets: str | None) -> dict[str, int]:
    """None of `secrets`, nor the portal's client secret, in `texts` (one text, or name →
    text); returns what was scanned. A secret given as None or empty fails the check:
    looking for nothing would pass vacuously."""
    assert secrets, "nothing to look for: the check would pass vacuously"
    assert all(secrets), "a secret to look for is empty"
    scanner = SecretScanner([*(s for s in secrets if s), settings.ATLASSIAN_CLIENT_SECRET])
    # The scanner must see a leak when there is one: a fragment of the last secret.
    canary = scanner.secrets[-1]
    assert scanner.hits(f"x{canary[len(canary) // 3 : len(canary) // 3 + 60]}x") or scanner.hits(canary)
    named = {"text": texts} if isinstance(texts, str) else dict(texts)
    leaks = {name: found for name, text in named.items() if (found := scanner.hits(text))}
    # Where, how many, and a few leading characters of each: enough to tell which value
    # leaked without printing it into the test report.
    assert not leaks, "secrets found in: " + "; ".join(
        f"{name}: {', '.join(sorted(secret[:12] + '…' for secret in found))}" for name, found in leaks.items()
    )
    return {"secrets": len(scanner.secrets), "texts": len(named), "bytes": sum(len(t) for t in named.values())}


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
