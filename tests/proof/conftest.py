"""Fixtures of the proof suites: a sandbox process per test, the portal pointed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.proof.harness import SandboxProcess

StartSandbox = Callable[..., SandboxProcess]


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    """Where the test's refresh_tokens processes write stdout/stderr (scanned for secrets)."""
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture
def start_sandbox(tmp_path: Path, settings: Any) -> Iterator[StartSandbox]:
    """Starts `python -m sandbox` and points this process's Atlassian URLs at it."""
    started: list[SandboxProcess] = []

    def start(*, leeway: float, access_ttl: int = 3600) -> SandboxProcess:
        sandbox = SandboxProcess(tmp_path / "sandbox", leeway=leeway, access_ttl=access_ttl).start()
        started.append(sandbox)
        settings.ATLASSIAN_AUTH_URL = sandbox.url
        settings.ATLASSIAN_API_URL = sandbox.url
        return sandbox

    yield start
    for sandbox in started:
        sandbox.stop()
