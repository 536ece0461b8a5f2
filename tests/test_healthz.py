"""/healthz: 200 JSON while the database answers, 503 when it does not."""

from __future__ import annotations

import logging
from unittest.mock import patch

import pytest
from django.db import OperationalError
from django.db.backends.utils import CursorWrapper
from django.test import Client


@pytest.mark.django_db
def test_healthz_answers_200_json_when_the_database_answers(client: Client) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"status": "ok", "database": "ok"}
    assert "no-store" in response.headers["Cache-Control"]


@pytest.mark.django_db
def test_healthz_answers_503_when_the_database_fails(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    failure = OperationalError("connection to server at 10.0.0.5 failed: password authentication failed")

    with caplog.at_level(logging.ERROR), patch.object(CursorWrapper, "execute", side_effect=failure) as execute:
        response = client.get("/healthz")

    assert execute.called
    assert response.status_code == 503
    assert response.json() == {"status": "error", "database": "unreachable"}
    # The reason goes to the log for operators, never to the anonymous caller.
    assert "10.0.0.5" not in response.content.decode()
    assert "healthz: database unreachable" in caplog.text


@pytest.mark.django_db
def test_healthz_needs_no_login_and_sets_no_cookie(client: Client) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert not response.cookies


@pytest.mark.django_db
def test_healthz_refuses_post(client: Client) -> None:
    assert client.post("/healthz").status_code == 405
