"""Serve the portal for local use (`make run`)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    env = dict(os.environ)
    print(f"jiraconnect: serving on http://{args.host}:{args.port}/  (Ctrl-C stops it)", flush=True)
    try:
        return subprocess.call([sys.executable, "manage.py", "runserver", f"{args.host}:{args.port}"], env=env)  # noqa: S603
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
