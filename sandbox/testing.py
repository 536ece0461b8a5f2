"""The sandbox as the tests, the proofs and the benchmarks drive it (uses `requests`; the
server does not).

`SandboxClient` plays the browser on the consent page and the app at the token endpoint,
and wraps the /_sandbox/ controls, so a test reads as the behaviour it checks.
`SandboxProcess` runs `python -m sandbox` as a child process on an ephemeral port.
"""

from __future__ import annotations

import html
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

from sandbox.config import SandboxConfig
from sandbox.seed import ADA

DEFAULT_SCOPES = "read:jira-work read:jira-user read:me offline_access"
TIMEOUT = 5.0
START_TIMEOUT = 20.0
PROJECT = Path(__file__).resolve().parent.parent
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]*)" value="([^"]*)">')
_LISTENING = re.compile(r"listening on (http://[0-9.:]+)")


def free_ports(count: int) -> list[int]:
    """Distinct free ports on 127.0.0.1: every probe stays bound until all are picked."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def free_port() -> int:
    (port,) = free_ports(1)
    return port


def consent_form_fields(page: str) -> dict[str, str]:
    """The hidden fields the consent page posts back (the original /authorize parameters)."""
    return {html.unescape(k): html.unescape(v) for k, v in _HIDDEN.findall(page)}


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


def approve(
    session: requests.Session,
    authorize_url: str,
    *,
    account_id: str = ADA,
    decision: str = "accept",
    timeout: float = TIMEOUT,
) -> str:
    """Open the consent page at `authorize_url`, choose an account, press a button.

    Returns the Location the sandbox redirects to (the app's callback with code or error).
    """
    page = session.get(authorize_url, timeout=timeout)
    page.raise_for_status()
    form = consent_form_fields(page.text)
    form.update(account_id=account_id, decision=decision)
    base = authorize_url.split("/authorize", 1)[0]
    answer = session.post(f"{base}/authorize", data=form, allow_redirects=False, timeout=timeout)
    if answer.status_code != 302:
        raise AssertionError(f"consent did not redirect: {answer.status_code} {answer.text[:200]}")
    return str(answer.headers["Location"])


class SandboxClient:
    def __init__(self, base_url: str, config: SandboxConfig, timeout: float = TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self.config = config
        self.timeout = timeout
        self.http = requests.Session()

    def close(self) -> None:
        self.http.close()

    # ---- the app's side ----------------------------------------------------------------
    def authorize_params(self, **overrides: str) -> dict[str, str]:
        params = {
            "audience": "api.atlassian.com",
            "client_id": self.config.client_id,
            "scope": DEFAULT_SCOPES,
            "redirect_uri": self.config.redirect_uri,
            "state": "state-123",
            "response_type": "code",
            "prompt": "consent",
        }
        params.update(overrides)
        return params

    def authorize_url(self, **overrides: str) -> str:
        return f"{self.base_url}/authorize?{urlencode(self.authorize_params(**overrides))}"

    def get_code(self, *, account_id: str = ADA, scope: str = DEFAULT_SCOPES) -> str:
        location = approve(self.http, self.authorize_url(scope=scope), account_id=account_id, timeout=self.timeout)
        return query_of(location)["code"]

    def token(self, body: dict[str, Any], **kwargs: Any) -> requests.Response:
        payload = {"client_id": self.config.client_id, "client_secret": self.config.client_secret, **body}
        kwargs.setdefault("timeout", self.timeout)
        return self.http.post(f"{self.base_url}/oauth/token", json=payload, **kwargs)

    def exchange(self, code: str, **overrides: Any) -> requests.Response:
        body = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.config.redirect_uri}
        return self.token({**body, **overrides})

    def refresh(self, refresh_token: str, **kwargs: Any) -> requests.Response:
        return self.token({"grant_type": "refresh_token", "refresh_token": refresh_token}, **kwargs)

    def connect(self, *, account_id: str = ADA, scope: str = DEFAULT_SCOPES) -> dict[str, Any]:
        """The whole consent flow; returns the token endpoint's JSON."""
        answer = self.exchange(self.get_code(account_id=account_id, scope=scope))
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def api(self, path: str, access_token: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        headers = {"Authorization": f"Bearer {access_token}", **kwargs.pop("headers", {})}
        method = kwargs.pop("method", "GET")
        return self.http.request(method, f"{self.base_url}{path}", headers=headers, **kwargs)

    # ---- controls ----------------------------------------------------------------------
    def control(self, name: str, body: Any = None) -> Any:
        url = f"{self.base_url}/_sandbox/{name}"
        if body is None:
            answer = self.http.get(url, timeout=self.timeout)
        else:
            answer = self.http.post(url, json=body, timeout=self.timeout)
        answer.raise_for_status()
        return answer.json()

    def reset(self) -> None:
        self.control("reset", {})

    def counters(self) -> dict[str, Any]:
        result: dict[str, Any] = self.control("counters")
        return result

    def faults(self, spec: dict[str, Any]) -> None:
        self.control("faults", spec)

    def advance(self, seconds: float) -> None:
        self.control("clock", {"advance": seconds})

    def configure(self, **changes: Any) -> None:
        self.control("config", changes)

    def mint(self, count: int = 1, *, account_id: str | None = None) -> list[dict[str, Any]]:
        """Live token pairs without the browser flow; count > 1 gives each its own account."""
        body: dict[str, Any] = {"count": count}
        if account_id is not None:
            body["account_id"] = account_id
        return list(self.control("grants", body))

    def grants(self) -> list[dict[str, Any]]:
        return list(self.control("grants"))

    def revoke(self, account_id: str) -> None:
        self.control("revoke", {"account_id": account_id})

    def refreshes_by_account(self) -> dict[str, int]:
        return dict(self.control("refreshes")["by_account"])

    def sites_of(self, account_id: str = ADA) -> list[dict[str, Any]]:
        """The seeded Jira sites of `account_id` (minted accounts get Ada's)."""
        seed = self.control("seed")
        user = next(user for user in seed["users"] if user["account_id"] == account_id)
        return [site for site in seed["sites"] if site["id"] in user["site_ids"]]

    def issued_secrets(self) -> list[str]:
        """Every code, token and client secret issued so far, and the one configured here
        (a test may have rotated the sandbox's since)."""
        issued = self.control("secrets")
        return [
            self.config.client_secret,
            issued["client_secret"],
            *issued["codes"],
            *issued["access_tokens"],
            *issued["refresh_tokens"],
        ]

    def wait_for_token_requests(self, above: int, *, timeout: float = 120.0) -> None:
        """Until the token endpoint has seen more than `above` requests."""
        deadline = time.monotonic() + timeout
        while self.counters()["requests"]["token"] <= above:
            if time.monotonic() > deadline:
                raise AssertionError("no token request reached the sandbox in time")
            time.sleep(0.02)


class SandboxProcess:
    """`python -m sandbox` as a child process on an ephemeral port, configured by `config`
    (through the environment: the client secret stays out of `ps`), plus `args` on its
    command line. Its output goes to a log file in `log_dir` (a temporary one if None)."""

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        log_dir: Path | None = None,
        args: tuple[str, ...] = (),
        timeout: float = TIMEOUT,
    ) -> None:
        self.config = config or SandboxConfig()
        self.args = args
        self.timeout = timeout
        self._temporary: tempfile.TemporaryDirectory[str] | None = None
        if log_dir is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="sandbox-")
            log_dir = Path(self._temporary.name)
        self.log_dir = log_dir
        self.log = self.log_dir / f"sandbox-{time.monotonic_ns()}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._client: SandboxClient | None = None

    def environment(self) -> dict[str, str]:
        config = self.config
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONDONTWRITEBYTECODE": "1",
            "SANDBOX_HOST": config.host,
            "SANDBOX_PORT": "0",
            "SANDBOX_QUIET": "true",
            "SANDBOX_CLIENT_ID": config.client_id,
            "SANDBOX_CLIENT_SECRET": config.client_secret,
            "SANDBOX_REDIRECT_URI": config.redirect_uri,
            "SANDBOX_LEEWAY": str(config.leeway),
            "SANDBOX_ACCESS_TTL": str(config.access_ttl),
            "SANDBOX_APP_NAME": config.app_name,
            "SANDBOX_UNAUTHORIZED_CLIENT_STYLE": str(config.unauthorized_client_style).lower(),
        }

    def start(self) -> SandboxProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(  # noqa: S603 (this interpreter, -m sandbox, the caller's options)
                [sys.executable, "-m", "sandbox", *self.args],
                cwd=PROJECT,
                env=self.environment(),
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            found = _LISTENING.search(self.log_text())
            if found:
                self.url = found.group(1)
                self._client = SandboxClient(self.url, self.config, timeout=self.timeout)
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the sandbox did not start: {self.log_text()[-2000:]}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._temporary is not None:
            self._temporary.cleanup()

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def client(self) -> SandboxClient:
        assert self._client is not None, "the sandbox is not started"
        return self._client

    def cpu_seconds(self) -> float:
        """User + system CPU the sandbox has used so far (Linux /proc)."""
        if self.process is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        # utime and stime are fields 14 and 15 of stat; the split starts at field 3.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- dynamic webhooks: the app's calls, the issue controls, a receiver -----------------------
WEBHOOK_SCOPE = f"{DEFAULT_SCOPES} manage:jira-webhook"


def webhook_path(cloud_id: str, rest: str = "webhook") -> str:
    return f"/ex/jira/{cloud_id}/rest/api/3/{rest}"


def _json_of(answer: requests.Response) -> Any:
    answer.raise_for_status()
    return answer.json()


def register_webhooks(
    client: SandboxClient, access_token: str, cloud_id: str, *, url: str, webhooks: list[dict[str, Any]]
) -> requests.Response:
    """POST /webhook as the app does: {"url", "webhooks": [{"events", "jqlFilter", …}]}."""
    body = {"url": url, "webhooks": webhooks}
    return client.api(webhook_path(cloud_id), access_token, method="POST", json=body)


def list_webhooks(client: SandboxClient, access_token: str, cloud_id: str, **params: Any) -> requests.Response:
    return client.api(webhook_path(cloud_id), access_token, params=params)


def refresh_webhooks(client: SandboxClient, access_token: str, cloud_id: str, ids: list[int]) -> requests.Response:
    return client.api(webhook_path(cloud_id, "webhook/refresh"), access_token, method="PUT", json={"webhookIds": ids})


def delete_webhooks(client: SandboxClient, access_token: str, cloud_id: str, ids: list[int]) -> requests.Response:
    return client.api(webhook_path(cloud_id), access_token, method="DELETE", json={"webhookIds": ids})


def change_issue(client: SandboxClient, key: str, *, actor: str | None = None, **fields: Any) -> dict[str, Any]:
    """POST /_sandbox/issues/{key}: summary, status (name) and/or assignee (account id or None)."""
    body = {**fields, **({"actor": actor} if actor else {})}
    result: dict[str, Any] = _json_of(
        client.http.post(f"{client.base_url}/_sandbox/issues/{key}", json=body, timeout=client.timeout)
    )
    return result


def comment_on_issue(client: SandboxClient, key: str, body: str, *, actor: str | None = None) -> dict[str, Any]:
    payload = {"body": body, **({"actor": actor} if actor else {})}
    url = f"{client.base_url}/_sandbox/issues/{key}/comments"
    result: dict[str, Any] = _json_of(client.http.post(url, json=payload, timeout=client.timeout))
    return result


def sandbox_webhooks(client: SandboxClient) -> list[dict[str, Any]]:
    """Every live webhook in the sandbox, with its owner (client_id, account_id, site_id)."""
    result: list[dict[str, Any]] = client.control("webhooks")
    return result


def deliveries(client: SandboxClient, *, settle: float | None = 5.0, status: str | None = None) -> list[dict[str, Any]]:
    """The sandbox's deliveries; by default waits up to `settle` s until none is pending."""
    params: dict[str, Any] = {}
    if settle is not None:
        params["settle"] = settle
    if status is not None:
        params["status"] = status
    answer = client.http.get(
        f"{client.base_url}/_sandbox/deliveries", params=params, timeout=client.timeout + (settle or 0)
    )
    result: list[dict[str, Any]] = _json_of(answer)["deliveries"]
    return result


@dataclass(frozen=True)
class ReceivedDelivery:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """A local HTTP endpoint that records what the sandbox delivers and answers with the
    status codes it is told to (then 200). A context manager; `url` is where to register."""

    def __init__(self, path: str = "/jira/webhook") -> None:
        self.path = path
        self.received: list[ReceivedDelivery] = []
        self.statuses: list[int] = []
        self._hangs = 0
        self._release = threading.Event()
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._cond:
                    receiver.received.append(ReceivedDelivery(self.path, dict(self.headers.items()), body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    hang = receiver._hangs > 0
                    receiver._hangs -= hang
                    receiver._cond.notify_all()
                if hang:
                    # Holds the answer back until the receiver closes: the sender times out.
                    receiver._release.wait(30)
                    return
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}{self.path}"

    def answer_with(self, *statuses: int) -> None:
        """The next attempts get these status codes, in order; later ones get 200."""
        with self._cond:
            self.statuses.extend(statuses)

    def hang_next(self, count: int) -> None:
        """The next `count` requests get no answer (until the receiver closes)."""
        with self._cond:
            self._hangs += count

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedDelivery]:
        """Block until `count` requests have arrived (AssertionError after `timeout`)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"expected {count} deliveries, got {len(self.received)}")
            return list(self.received)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
