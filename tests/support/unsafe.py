"""The proofs' negative control: the refresh claim switched off, from test tooling only.

Production code has no switch for this. `claim_switched_off()` replaces
integrations.lifecycle.refresh.lease_free with a condition every row meets, so any
number of workers claim one connection at once; run as a script,
`python tests/support/unsafe.py <manage.py arguments>` does the same in a manage.py
child process. A proof that still passes under it proves nothing.
"""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

PROJECT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).resolve()


@contextmanager
def claim_switched_off() -> Iterator[None]:
    from django.db.models import Q

    with mock.patch("integrations.lifecycle.refresh.lease_free", return_value=Q()):
        yield


if __name__ == "__main__":
    sys.path.insert(0, str(PROJECT))
    # The patch imports lifecycle.refresh, which imports the models: Django first.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jiraconnect.settings")
    import django

    django.setup()
    with claim_switched_off():
        sys.argv = ["manage.py", *sys.argv[1:]]
        runpy.run_path(str(PROJECT / "manage.py"), run_name="__main__")
