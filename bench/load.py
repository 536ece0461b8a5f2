"""The settings page under load: gunicorn, 2 sync workers, on loopback, for 10 s.

The portal runs in its production configuration (DEBUG off; bench.harness sets the
environment), as behind a TLS-terminating proxy: every request carries
`X-Forwarded-Proto: https`, without which SECURE_SSL_REDIRECT would answer a redirect.
Every measured answer must be a 200; any other status fails the benchmark.

A signed-in user with one connection (3 sites) asks for /settings/; in the same run,
Django's own login page (/accounts/login/, anonymous, no query) gives the baseline of
what this machine serves through the same stack. The load comes from `wrk` when it is
installed (`apt-get install wrk`), else from bench.loadgen; both run on the same cores
as gunicorn and PostgreSQL, so the figures are those of one 2-core box doing everything.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict
from typing import IO, Any

from django.conf import settings

from accounts.models import User
from bench import loadgen, seed
from bench.harness import BASE_DIR, FORWARDED_HEADERS, BenchError, Outcome, Row, signed_in_client
from bench.loadgen import LoadResult
from sandbox.testing import SandboxClient, free_port

SECONDS = 10
CONNECTIONS = 8
WORKERS = 2
START_TIMEOUT = 30.0
WRK_SCRIPT = BASE_DIR / "bench" / "wrk_status.lua"
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def fetch(url: str, *, cookie: str = "") -> tuple[int, str]:
    opener = urllib.request.build_opener(_NoRedirect)
    headers = {**FORWARDED_HEADERS, **({"Cookie": cookie} if cookie else {})}
    request = urllib.request.Request(url, headers=headers)
    try:
        with opener.open(request, timeout=10) as response:
            return int(response.status), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def start_gunicorn(port: int, *, log: IO[bytes] | None = None) -> subprocess.Popen[bytes]:
    """gunicorn on `port`; its output (the portal's log) goes to `log`, else to ours."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "jiraconnect.wsgi:application",
            "--workers",
            str(WORKERS),
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
        ],
        cwd=BASE_DIR,
        stdout=log,
        stderr=log,
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            if fetch(f"http://127.0.0.1:{port}/healthz")[0] == 200:
                return process
        except OSError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.terminate()
    process.wait()
    raise BenchError("gunicorn did not start")


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value.strip())
    if match is None:
        raise BenchError(f"unreadable wrk latency {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> LoadResult:
    rate = re.search(r"Requests/sec:\s*([\d.]+)", output)
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    p50 = re.search(r"^\s*50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s*99%\s+(\S+)", output, re.MULTILINE)
    slowest = re.search(r"^\s*Latency\s+\S+\s+\S+\s+(\S+)", output, re.MULTILINE)
    if not (rate and total and p50 and p99 and slowest):
        raise BenchError(f"unreadable wrk output:\n{output}")
    # bench/wrk_status.lua counts every answer other than 200, redirects included.
    not_200 = re.search(r"Not-200 responses:\s*(\d+)", output)
    if not_200 is None:
        raise BenchError(f"wrk ran without bench/wrk_status.lua:\n{output}")
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = int(not_200.group(1))
    if socket_errors:
        # gunicorn's sync workers close every connection after the answer: wrk counts
        # those closes as read errors although each request was answered. Only failed
        # connects, writes and timeouts are errors here.
        errors += int(socket_errors.group(1)) + int(socket_errors.group(3)) + int(socket_errors.group(4))
    return LoadResult(
        tool="wrk",
        requests=int(total.group(1)),
        errors=errors,
        not_200=int(not_200.group(1)),
        seconds=_ms(total.group(2) + total.group(3)) / 1000,
        requests_per_second=float(rate.group(1)),
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        max_ms=_ms(slowest.group(1)),
    )


def load(url: str, *, cookie_name: str, cookie: str, seconds: int, connections: int) -> LoadResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        cookies = {cookie_name: cookie} if cookie else {}
        return loadgen.run(url, cookies=cookies, headers=FORWARDED_HEADERS, connections=connections, seconds=seconds)
    args = [wrk, "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(WRK_SCRIPT)]
    args += [arg for name, value in FORWARDED_HEADERS.items() for arg in ("-H", f"{name}: {value}")]
    if cookie:
        args += ["-H", f"Cookie: {cookie_name}={cookie}"]
    completed = subprocess.run([*args, url], capture_output=True, text=True, check=True)
    return parse_wrk(completed.stdout)


def measure(*, control: SandboxClient, seconds: int = SECONDS, connections: int = CONNECTIONS) -> Outcome:
    (owner,) = seed.users(1, prefix="load-")
    grants = control.mint(1)
    (connection,) = seed.connections([owner], grants, expires_at=None)
    seed.sites_from_atlassian(connection, access_token=grants[0]["access_token"])
    client = signed_in_client(User.objects.get(pk=owner.pk))
    cookie_name = settings.SESSION_COOKIE_NAME
    cookie = client.cookies[cookie_name].value

    port = free_port()
    server = start_gunicorn(port)
    try:
        base = f"http://127.0.0.1:{port}"
        status, body = fetch(f"{base}/settings/", cookie=f"{cookie_name}={cookie}")
        if status != 200 or connection.account_name not in body:
            raise BenchError(f"the session cookie does not open the settings page (HTTP {status})")
        if fetch(f"{base}/accounts/login/")[0] != 200:
            raise BenchError("the login page does not answer 200")
        pages = {
            "settings": load(
                f"{base}/settings/", cookie_name=cookie_name, cookie=cookie, seconds=seconds, connections=connections
            ),
            "login": load(
                f"{base}/accounts/login/", cookie_name=cookie_name, cookie="", seconds=seconds, connections=connections
            ),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
    for name, result in pages.items():
        if result.not_200:
            raise BenchError(f"{result.not_200} of {result.requests} answers for the {name} page were not 200")
    settings_page, login_page = pages["settings"], pages["login"]
    share = settings_page.requests_per_second / login_page.requests_per_second if login_page.requests_per_second else 0
    tool = settings_page.tool
    outcome = Outcome("load")
    outcome.rows = [
        Row(
            "/settings/ signed in",
            f"{settings_page.requests_per_second:.0f} req/s, p99 {settings_page.p99_ms:.1f} ms, "
            f"{settings_page.errors} errors",
            f"{tool}, {connections} connections, {seconds} s",
        ),
        Row(
            "/accounts/login/ (baseline)",
            f"{login_page.requests_per_second:.0f} req/s, p99 {login_page.p99_ms:.1f} ms, {login_page.errors} errors",
        ),
        Row("settings / login throughput", f"{share:.0%}"),
    ]
    outcome.data = {
        "tool": tool,
        "gunicorn_workers": WORKERS,
        "connections": connections,
        "seconds": seconds,
        "debug": settings.DEBUG,
        "secure_ssl_redirect": settings.SECURE_SSL_REDIRECT,
        "request_headers": FORWARDED_HEADERS,
        "pages": {name: asdict(result) for name, result in pages.items()},
        "settings_vs_login": round(share, 3),
    }
    return outcome
