"""Fixtures of the concurrency proofs: a strict token server and 20 due connections on it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import User
from integrations.models import JiraConnection
from tests.concurrency.strict import StrictTokenServer
from tests.conftest import ConnectionFactory

CONNECTIONS = 20


@pytest.fixture
def strict_server() -> Iterator[StrictTokenServer]:
    with StrictTokenServer(latency_ms=30) as server, server.portal_settings():
        yield server


@pytest.fixture
def due_connections(strict_server: StrictTokenServer, make_connection: ConnectionFactory) -> list[JiraConnection]:
    """20 connections, each holding a live grant on the strict server, all expired."""
    now = timezone.now()
    connections = []
    for n, grant in enumerate(strict_server.mint(CONNECTIONS)):
        user = User.objects.create_user(f"user{n}@example.com", "proof horse battery staple")
        connections.append(
            make_connection(
                user,
                account_id=grant["account_id"],
                access_token=grant["access_token"],
                refresh_token=grant["refresh_token"],
                access_token_expires_at=now - timedelta(minutes=1),
            )
        )
    return connections
