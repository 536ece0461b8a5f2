"""Start gunicorn as production does (from the project folder, reading gunicorn.conf.py)."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.processes import PROJECT, child_env

HOST = "portal.example.com"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def request(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """GET `path` as a browser of HOST would: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path, headers={"Host": HOST, **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


@contextmanager
def gunicorn(env: dict[str, str], *args: str) -> Iterator[int]:
    """gunicorn on a free port with `env` alone and extra `args`; yields the port once
    it answers, stops it afterwards."""
    port = free_port()
    # No -c: gunicorn reads gunicorn.conf.py from the working directory, as in production.
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "jiraconnect.wsgi", "--bind", f"127.0.0.1:{port}", *args],
        cwd=PROJECT,
        env=child_env(env),
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                request(port, "/healthz")
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)
