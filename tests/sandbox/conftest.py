"""One in-process sandbox per test session, reset before every test; or its own process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sandbox.server import Sandbox, SandboxConfig
from sandbox.testing import SandboxClient


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(port=0)) as server:
        yield server


@pytest.fixture
def sb(sandbox_server: Sandbox) -> Sandbox:
    sandbox_server.state.reset()
    return sandbox_server


@pytest.fixture
def client(sb: Sandbox) -> Iterator[SandboxClient]:
    sandbox_client = SandboxClient(sb.url, sb.config)
    yield sandbox_client
    sandbox_client.close()


REPO = Path(__file__).resolve().parents[2]


@contextmanager
def sandbox_process(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`python -m sandbox --port 0 --quiet *args` as its own process; yields it and its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--port", "0", "--quiet", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, line + (process.stderr.read() if process.stderr else "")
        yield process, line.split("listening on ", 1)[1].split()[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
