"""`python tests/support/gated_manage.py <manage.py arguments>`: manage.py, on a signal.

Django is set up first, then the process prints "ready" and waits for a line on stdin
before running manage.py. The parent releases all its children at once, so their start-up
times (which vary by seconds on a loaded machine) cannot serialise the race under test.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]

if __name__ == "__main__":
    sys.path.insert(0, str(PROJECT))
    import django

    django.setup()
    import integrations.management.commands.refresh_tokens  # noqa: F401 (pay the import before the start)

    print("ready", flush=True)
    sys.stdin.readline()
    sys.argv = ["manage.py", *sys.argv[1:]]
    runpy.run_path(str(PROJECT / "manage.py"), run_name="__main__")
