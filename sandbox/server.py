"""The HTTP server: routing, fault injection and socket handling around `State`.

Built on the standard library only, so that it runs anywhere the project does and never
shares a process, a database or a dependency with the code under test.
"""

from __future__ import annotations

import contextlib
import re
import socket
import socketserver
import sys
import threading
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from sandbox import endpoints
from sandbox.config import SandboxConfig
from sandbox.faults import PRE_KINDS, FaultDecision
from sandbox.messages import Request, Response, html_response, json_response
from sandbox.state import State

__all__ = ["Sandbox", "SandboxConfig", "State"]

MAX_BODY = 10 * 1024 * 1024
_JIRA = re.compile(r"^/ex/jira/(?P<cloud>[^/]+)/rest/api/3/(?P<rest>.+?)/?$")
_AVATAR = re.compile(r"^/avatars/(?P<avatar>[A-Za-z0-9_-]+)\.svg$")
_ISSUE_CONTROL = re.compile(r"^/_sandbox/issues/(?P<key>[A-Za-z][A-Za-z0-9]*-[0-9]+)(?P<comments>/comments)?/?$")
# A Host header worth echoing into URLs: a name or IPv4 or [IPv6] address, and a port.
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


@dataclass(frozen=True)
class Route:
    endpoint: str | None  # name for counters and faults; None for controls and unknown paths
    handler: endpoints.Handler


def _fixed(response: Response) -> endpoints.Handler:
    def handler(state: State, request: Request) -> Response:
        return response

    return handler


_NOT_FOUND = _fixed(json_response(404, endpoints.NOT_FOUND))
_METHOD_NOT_ALLOWED = _fixed(json_response(405, {"errorMessages": ["Method not allowed"]}))


def _jira_route(method: str, cloud_id: str, rest: str) -> Route:
    if rest == "myself":
        if method != "GET":
            return Route("myself", _METHOD_NOT_ALLOWED)
        return Route("myself", lambda s, r: endpoints.jira_myself(s, r, cloud_id))
    if rest == "search/jql":
        if method not in ("GET", "POST"):
            return Route("search", _METHOD_NOT_ALLOWED)
        return Route("search", lambda s, r: endpoints.jira_search(s, r, cloud_id))
    if rest == "search":
        return Route("search_legacy", lambda s, r: endpoints.jira_search_legacy(s, r, cloud_id))
    if rest == "webhook":
        if method not in ("GET", "POST", "DELETE"):
            return Route("webhook", _METHOD_NOT_ALLOWED)
        return Route("webhook", lambda s, r: endpoints.jira_webhook(s, r, cloud_id))
    if rest == "webhook/refresh":
        if method != "PUT":
            return Route("webhook_refresh", _METHOD_NOT_ALLOWED)
        return Route("webhook_refresh", lambda s, r: endpoints.jira_webhook_refresh(s, r, cloud_id))
    return Route(None, _NOT_FOUND)


def _issue_control_route(method: str, key: str, comments: bool) -> Route:
    if comments:
        if method != "POST":
            return Route(None, _METHOD_NOT_ALLOWED)
        return Route(None, lambda s, r: endpoints.control_issue_comments(s, r, key))
    if method not in ("GET", "POST"):
        return Route(None, _METHOD_NOT_ALLOWED)
    return Route(None, lambda s, r: endpoints.control_issue(s, r, key))


def resolve(method: str, path: str) -> Route:
    if path == "/authorize":
        if method == "GET":
            return Route("authorize", endpoints.authorize_get)
        if method == "POST":
            return Route("authorize", endpoints.authorize_post)
        return Route("authorize", _METHOD_NOT_ALLOWED)
    if path == "/oauth/token":
        return Route("token", endpoints.token if method == "POST" else _METHOD_NOT_ALLOWED)
    if path == "/oauth/token/accessible-resources":
        return Route("accessible_resources", endpoints.accessible_resources if method == "GET" else _METHOD_NOT_ALLOWED)
    if path == "/me":
        return Route("me", endpoints.me if method == "GET" else _METHOD_NOT_ALLOWED)
    jira = _JIRA.match(path)
    if jira:
        return _jira_route(method, jira["cloud"], jira["rest"])
    avatar = _AVATAR.match(path)
    if avatar:
        # Not an Atlassian API call: like the controls, never faulted or counted.
        if method != "GET":
            return Route(None, _METHOD_NOT_ALLOWED)
        return Route(None, lambda s, r: endpoints.avatar(s, r, avatar["avatar"]))
    issue = _ISSUE_CONTROL.match(path)
    if issue:
        return _issue_control_route(method, issue["key"], bool(issue["comments"]))
    control = endpoints.CONTROLS.get(path.rstrip("/"))
    if control:
        methods, handler = control
        return Route(None, handler if method in methods else _METHOD_NOT_ALLOWED)
    if path == "/" and method == "GET":
        return Route(None, _index)
    return Route(None, _NOT_FOUND)


def _index(state: State, request: Request) -> Response:
    return json_response(
        200,
        {
            "service": "Atlassian OAuth 3LO sandbox",
            "authorize": "/authorize",
            "token": "/oauth/token",
            "controls": sorted(endpoints.CONTROLS),
        },
    )


def fault_response(decision: FaultDecision, kind: str) -> Response:
    if kind == "500":
        return json_response(500, {"code": 500, "message": "Internal Server Error"})
    if kind == "503":
        # Gateways in front of Atlassian answer 503 with an HTML page, not JSON.
        return html_response(
            503,
            "<html><head><title>503 Service Temporarily Unavailable</title></head>"
            "<body><center><h1>503 Service Temporarily Unavailable</h1></center></body></html>",
        )
    if kind == "429":
        return json_response(
            429,
            {"code": 429, "message": "Rate limit exceeded"},
            [
                ("Retry-After", str(decision.retry_after)),
                ("X-RateLimit-Remaining", "0"),
                ("X-RateLimit-Reset", (datetime.now(UTC) + timedelta(seconds=decision.retry_after)).isoformat()),
            ],
        )
    # "malformed": a 200 whose body is not JSON, though it claims to be.
    return Response(200, b"<html>upstream connect error or disconnect/reset before headers", "application/json")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a DNS lookup that can stall start-up.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer is routine under fault injection.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without it, a response written as headers + body meets Nagle and delayed ACKs (~40 ms).
    disable_nagle_algorithm = True
    server_version = "atlassian-sandbox/1.0"
    sys_version = ""
    # Idle keep-alive connections give their thread back after this long.
    timeout = 120

    @property
    def sandbox(self) -> Sandbox:
        return cast(_Server, self.server).sandbox

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def log_message(self, format: str, *args: Any) -> None:
        if self.sandbox.state.config.log_requests:
            super().log_message(format, *args)

    def _read_body(self) -> bytes | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY or length < 0:
            return None
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        sandbox = self.sandbox
        state = sandbox.state
        try:
            body = self._read_body()
        except ValueError:
            body = None
        if body is None:
            self.close_connection = True
            self._send(json_response(413, {"errorMessages": ["Request body too large or malformed"]}))
            return
        split = urlsplit(self.path)
        host = self.headers.get("Host") or ""
        origin = f"http://{host}" if _HOST.fullmatch(host) else sandbox.url
        query = parse_qs(split.query, keep_blank_values=True)
        request = Request(method, split.path, query, self.headers, body, origin)
        route = resolve(method, split.path)
        decision = state.begin_request(route.endpoint) if route.endpoint else None
        if decision is not None:
            # Slept outside the state lock, so injected latency never serialises requests.
            if decision.latency > 0:
                sandbox.stopping.wait(decision.latency)
            if decision.kind == "timeout":
                sandbox.stopping.wait(decision.hang_seconds)
                self._drop()
                return
            if decision.kind in PRE_KINDS:
                self._send(fault_response(decision, decision.kind))
                return
        try:
            response = route.handler(state, request)
        except Exception:
            # A sandbox bug must show up as an answer, not as a hang or a bare disconnect
            # that the client under test would take for an injected fault.
            traceback.print_exc()
            response = json_response(500, {"code": 500, "message": "sandbox internal error (see its stderr)"})
        if decision is not None and decision.kind == "lost_response":
            self._drop()
            return
        self._send(response)

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send(self, response: Response) -> None:
        try:
            phrase = HTTPStatus(response.status).phrase
        except ValueError:
            phrase = ""
        lines = [
            f"HTTP/1.1 {response.status} {phrase}",
            f"Server: {self.server_version}",
            f"Date: {self.date_time_string()}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
        ]
        lines.extend(f"{name}: {value}" for name, value in response.headers)
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        # One write: headers and body leave in the same segment.
        self.wfile.write(head + response.body)
        self.log_request(response.status, len(response.body))


class Sandbox:
    """One sandbox server. `start()` serves in a daemon thread; also a context manager."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.state = State(config or SandboxConfig())
        self.stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # Kept after stop() so a test can show that the old address no longer answers.
        self._bound_port: int | None = None

    @property
    def config(self) -> SandboxConfig:
        return self.state.config

    @property
    def host(self) -> str:
        return self.state.initial_config.host

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError("the sandbox is not started")
        return self._bound_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Sandbox:
        if self._server is not None:
            raise RuntimeError("the sandbox is already started")
        self.stopping.clear()
        self._server = _Server((self.host, self.state.initial_config.port), self)
        self._bound_port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="sandbox", daemon=True
        )
        self._thread.start()
        self.state.deliveries.start()
        return self

    def stop(self) -> None:
        # Wakes handlers sleeping for injected latency or hangs, so they end promptly.
        self.stopping.set()
        self.state.deliveries.stop()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Sandbox:
        return self.start() if self._server is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
