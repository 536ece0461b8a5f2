"""Plain request/response values passed between the socket handler and the endpoints."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from email.message import Message
from typing import Any


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes
    # scheme://host:port the client called (its Host header), for URLs back to this sandbox.
    origin: str

    def first(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_response(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(status, body, "application/json", list(headers or []))


def html_response(status: int, page: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, page.encode(), "text/html; charset=utf-8", list(headers or []))


def redirect(location: str) -> Response:
    return Response(
        302,
        b"",
        "text/html; charset=utf-8",
        [("Location", location), ("Cache-Control", "no-store")],
    )
