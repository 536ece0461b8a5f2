"""Fixtures of the proof suites: a sandbox process per test, the portal pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.config import SandboxConfig
from sandbox.testing import SandboxClient, SandboxProcess
from tests.proof.harness import StartSandbox


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    """Where the test's refresh_tokens processes write stdout/stderr (scanned for secrets)."""
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture
def start_sandbox(tmp_path: Path, settings: Any) -> Iterator[StartSandbox]:
    """Starts `python -m sandbox` with the portal's test client credentials, points this
    process's Atlassian URLs at it, and returns its control client."""
    started: list[SandboxProcess] = []

    def start(*, leeway: float, access_ttl: int = 3600) -> SandboxClient:
        config = SandboxConfig(
            client_id=settings.ATLASSIAN_CLIENT_ID,
            client_secret=settings.ATLASSIAN_CLIENT_SECRET,
            redirect_uri=settings.ATLASSIAN_REDIRECT_URI,
            leeway=leeway,
            access_ttl=access_ttl,
        )
        sandbox = SandboxProcess(config, log_dir=tmp_path / "sandbox", timeout=30).start()
        started.append(sandbox)
        settings.ATLASSIAN_AUTH_URL = sandbox.url
        settings.ATLASSIAN_API_URL = sandbox.url
        return sandbox.client

    yield start
    for sandbox in started:
        sandbox.stop()
