"""Run the sandbox as its own process: ``python -m sandbox --port 8001``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from sandbox.config import SandboxConfig
from sandbox.server import Sandbox

_DEFAULTS = SandboxConfig()


def _env(name: str, default: str) -> str:
    return os.environ.get(f"SANDBOX_{name}", default)


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(f"SANDBOX_{name}")
    if raw is None:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def parse_args(argv: Sequence[str] | None = None) -> SandboxConfig:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox",
        description="Local stand-in for auth.atlassian.com + api.atlassian.com. "
        "Every option also reads SANDBOX_<OPTION> (e.g. SANDBOX_PORT) from the environment.",
    )
    parser.add_argument("--host", default=_env("HOST", _DEFAULTS.host))
    parser.add_argument("--port", type=int, default=int(_env("PORT", str(_DEFAULTS.port))))
    parser.add_argument("--client-id", default=_env("CLIENT_ID", _DEFAULTS.client_id))
    parser.add_argument("--client-secret", default=_env("CLIENT_SECRET", _DEFAULTS.client_secret))
    parser.add_argument("--redirect-uri", default=_env("REDIRECT_URI", _DEFAULTS.redirect_uri))
    parser.add_argument("--leeway", type=float, default=float(_env("LEEWAY", str(_DEFAULTS.leeway))))
    parser.add_argument("--access-ttl", type=int, default=int(_env("ACCESS_TTL", str(_DEFAULTS.access_ttl))))
    parser.add_argument("--app-name", default=_env("APP_NAME", _DEFAULTS.app_name))
    parser.add_argument(
        "--unauthorized-client-style",
        action="store_true",
        default=_env_bool("UNAUTHORIZED_CLIENT_STYLE", False),
        help="dead grants answer 403 unauthorized_client instead of invalid_grant",
    )
    parser.add_argument(
        "--quiet", action="store_true", default=_env_bool("QUIET", False), help="do not log each request"
    )
    args = parser.parse_args(argv)
    return SandboxConfig(
        host=args.host,
        port=args.port,
        client_id=args.client_id,
        client_secret=args.client_secret,
        redirect_uri=args.redirect_uri,
        leeway=args.leeway,
        access_ttl=args.access_ttl,
        app_name=args.app_name,
        unauthorized_client_style=args.unauthorized_client_style,
        log_requests=not args.quiet,
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sandbox = Sandbox(config).start()
    print(
        f"sandbox: Atlassian OAuth stand-in listening on {sandbox.url} "
        f"(client_id={config.client_id}, redirect_uri={config.redirect_uri}, leeway={config.leeway:g}s)",
        flush=True,
    )
    try:
        # Short waits keep the main thread responsive to signals.
        while not stop.wait(0.5):
            pass
    finally:
        sandbox.stop()
    print("sandbox: stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
