#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jiraconnect.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        # A missing or malformed setting is the operator's to fix, not a crash: name it,
        # and exit 2 like refresh_tokens' other configuration errors, so cron can alert.
        sys.stderr.write(f"Configuration error: {exc}\n")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
