"""One in-process sandbox per test session, reset before every test."""

from __future__ import annotations

from collections.abc import Iterator

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
