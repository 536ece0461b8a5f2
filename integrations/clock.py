"""The one time seam: services ask `now()`; tests patch it instead of sleeping."""

from __future__ import annotations

import time
from datetime import datetime

from django.utils import timezone


def now() -> datetime:
    return timezone.now()


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def monotonic() -> float:
    """Seconds on a clock that never jumps: for durations (tests patch it to fix them)."""
    return time.monotonic()
