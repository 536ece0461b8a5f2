"""Serve the portal for local use (`make run`).

With no ATLASSIAN_CLIENT_ID (in the environment or in .env) it also starts the offline
Atlassian sandbox (`python -m sandbox`) and points the portal at it, so the whole
connect flow works without a network. With a client id it serves the portal alone.
Ctrl-C or SIGTERM stops every process it started.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    # Run as `python scripts/run.py`: the sandbox's seed lives in the project root.
    sys.path.insert(0, str(BASE_DIR))

from sandbox.config import CLIENT_ID as SANDBOX_CLIENT_ID  # noqa: E402
from sandbox.config import CLIENT_SECRET as SANDBOX_CLIENT_SECRET  # noqa: E402
from sandbox.seed import SITES, USERS  # noqa: E402

SANDBOX_HOST = "127.0.0.1"
SANDBOX_START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


class _FileOnlyEnv(environ.Env):  # type: ignore[misc]  # environ ships no types
    # read_env writes into cls.ENVIRON; a dict of our own keeps os.environ untouched.
    ENVIRON: dict[str, str] = {}


def env_file_values(environment: Mapping[str, str], base_dir: Path = BASE_DIR) -> dict[str, str]:
    """The variables the settings would read from a .env file, honouring JIRACONNECT_ENV_FILE
    exactly as jiraconnect/settings.py does (unset: ./.env; empty: none; else that file)."""
    chosen = environment.get("JIRACONNECT_ENV_FILE")
    if chosen is None:
        path = base_dir / ".env"
    elif chosen.strip():
        path = Path(chosen)
    else:
        return {}
    if not path.is_file():
        return {}
    _FileOnlyEnv.ENVIRON = {}
    _FileOnlyEnv.read_env(str(path), overwrite=True)
    return dict(_FileOnlyEnv.ENVIRON)


def configured_client_id(environment: Mapping[str, str], file_values: Mapping[str, str]) -> str:
    # Real environment variables win over .env, even when set empty (as in settings).
    if "ATLASSIAN_CLIENT_ID" in environment:
        return environment["ATLASSIAN_CLIENT_ID"].strip()
    return file_values.get("ATLASSIAN_CLIENT_ID", "").strip()


def _loopback(host: str) -> str:
    # The browser must come back to an address it can reach; 0.0.0.0 is not one.
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host  # noqa: S104


@dataclass(frozen=True)
class SandboxPlan:
    port: int
    redirect_uri: str

    @property
    def url(self) -> str:
        return f"http://{SANDBOX_HOST}:{self.port}"

    def portal_env(self) -> dict[str, str]:
        return {
            "ATLASSIAN_CLIENT_ID": SANDBOX_CLIENT_ID,
            "ATLASSIAN_CLIENT_SECRET": SANDBOX_CLIENT_SECRET,
            "ATLASSIAN_REDIRECT_URI": self.redirect_uri,
            "ATLASSIAN_AUTH_URL": self.url,
            "ATLASSIAN_API_URL": self.url,
            # Jira webhooks are delivered to this portal, whatever port it serves on.
            "ATLASSIAN_WEBHOOK_URL": self.redirect_uri.removesuffix("callback/") + "webhook/",
        }

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "sandbox",
            "--host",
            SANDBOX_HOST,
            "--port",
            str(self.port),
            "--client-id",
            SANDBOX_CLIENT_ID,
            "--client-secret",
            SANDBOX_CLIENT_SECRET,
            "--redirect-uri",
            self.redirect_uri,
            "--leeway",
            "600",
            "--access-ttl",
            "3600",
        ]


def sandbox_plan(
    *, environment: Mapping[str, str], file_values: Mapping[str, str], host: str, port: int, sandbox_port: int
) -> SandboxPlan | None:
    """None when a real Atlassian app is configured; else how to run the sandbox."""
    if configured_client_id(environment, file_values):
        return None
    return SandboxPlan(port=sandbox_port, redirect_uri=f"http://{_loopback(host)}:{port}/integrations/jira/callback/")


def sandbox_banner(plan: SandboxPlan, *, portal_url: str) -> str:
    sites = {site.cloud_id: site.name for site in SITES}
    users = "\n".join(
        f"    {user.name:<14} {user.email:<20} sites: {', '.join(sites[s] for s in user.site_ids)}" for user in USERS
    )
    rule = "=" * 78
    return f"""{rule}
  OFFLINE SANDBOX: this is NOT Atlassian.
  ATLASSIAN_CLIENT_ID is not set, so a local stand-in for auth.atlassian.com and
  api.atlassian.com runs at {plan.url} (no network, no real account).

  Portal: {portal_url}
    Sign up, open Settings, press "Connect Jira", then pick one of these seeded
    users on the sandbox consent page and press Accept:
{users}
  Change an issue or comment on one (webhook deliveries follow): {plan.url}/_sandbox/issues
  Sandbox controls (revoke a grant, inject faults, reset): {plan.url}/_sandbox/...
    see sandbox/README.md.

  To use a real Atlassian app instead, set ATLASSIAN_CLIENT_ID,
  ATLASSIAN_CLIENT_SECRET and ATLASSIAN_REDIRECT_URI in .env (README.md,
  "Using a real Atlassian app") and run `make run` again.

  Ctrl-C stops the portal and the sandbox.
{rule}"""


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def wait_until_answering(url: str, *, process: subprocess.Popen[bytes], stop: threading.Event, timeout: float) -> bool:
    """True once `url` answers HTTP at all; False if the process died, we were told to stop,
    or `timeout` passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1.0):  # noqa: S310 (a fixed http://127.0.0.1 URL)
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            stop.wait(0.1)
    return False


def start(command: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    # A session (and process group) of its own: Ctrl-C reaches only us, and we stop each
    # child's whole group, runserver's autoreloader child included, in a set order.
    return subprocess.Popen(list(command), cwd=BASE_DIR, env=dict(env), start_new_session=True)  # noqa: S603


def stop_group(process: subprocess.Popen[bytes], *, timeout: float = STOP_TIMEOUT) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; make sure nothing it left in its group lives on.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        return


def supervise(children: list[tuple[str, subprocess.Popen[bytes]]], stop: threading.Event) -> int:
    """Wait until a signal arrives or a child exits; then stop the others, newest first."""
    exit_code = 0
    try:
        while not stop.is_set():
            for name, process in children:
                code = process.poll()
                if code is not None:
                    print(f"jiraconnect: the {name} exited (status {code}); stopping.", file=sys.stderr, flush=True)
                    exit_code = code or 1
                    stop.set()
                    break
            stop.wait(0.2)
    finally:
        for _name, process in reversed(children):
            stop_group(process)
    return exit_code


def print_env(*, host: str, port: int, sandbox_port: int) -> int:
    plan = sandbox_plan(
        environment=os.environ,
        file_values=env_file_values(os.environ),
        host=host,
        port=port,
        sandbox_port=sandbox_port,
    )
    if plan is None:
        print("# ATLASSIAN_CLIENT_ID is set: commands use your Atlassian app, not the sandbox.")
    else:
        for name, value in plan.portal_env().items():
            print(f"export {name}={shlex.quote(value)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the portal (and the offline sandbox when needed).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--sandbox-port", type=int, default=int(os.environ.get("SANDBOX_PORT", "8001")))
    parser.add_argument(
        "--print-env",
        action="store_true",
        help="Print the sandbox's ATLASSIAN_* settings as shell exports and exit, for other "
        'commands against a running sandbox: eval "$(python scripts/run.py --print-env)"',
    )
    args = parser.parse_args(argv)
    if args.print_env:
        return print_env(host=args.host, port=args.port, sandbox_port=args.sandbox_port)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    portal_url = f"http://{_loopback(args.host)}:{args.port}/"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    plan = sandbox_plan(
        environment=os.environ,
        file_values=env_file_values(os.environ),
        host=args.host,
        port=args.port,
        sandbox_port=args.sandbox_port,
    )
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    if plan is not None:
        if port_in_use(SANDBOX_HOST, plan.port):
            print(
                f"jiraconnect: port {plan.port} is already in use (a sandbox left from another `make run`?). "
                "Stop it, or pick another port: make run SANDBOX_PORT=8011",
                file=sys.stderr,
                flush=True,
            )
            return 1
        sandbox = start(plan.command(), env)
        children.append(("sandbox", sandbox))
        if not wait_until_answering(plan.url + "/", process=sandbox, stop=stop, timeout=SANDBOX_START_TIMEOUT):
            stop_group(sandbox)
            if stop.is_set():
                return 0
            print(f"jiraconnect: the sandbox did not answer at {plan.url}; not starting.", file=sys.stderr, flush=True)
            return 1
        env.update(plan.portal_env())
        print(sandbox_banner(plan, portal_url=portal_url), flush=True)
    else:
        print(
            f"jiraconnect: serving on {portal_url} with the Atlassian app set in ATLASSIAN_CLIENT_ID "
            "(Ctrl-C stops it).",
            flush=True,
        )
    children.append(("portal", start([sys.executable, "manage.py", "runserver", f"{args.host}:{args.port}"], env)))
    return supervise(children, stop)


if __name__ == "__main__":
    raise SystemExit(main())
