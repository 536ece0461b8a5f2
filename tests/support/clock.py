"""A fake for integrations.clock: time moves only when told, sleeps are recorded."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from integrations import clock


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.current = start
        self.sleeps: list[float] = []
        self.on_sleep: list[Callable[[], object]] = []

    def now(self) -> datetime:
        return self.current

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.current += timedelta(seconds=seconds)
        for hook in self.on_sleep:
            hook()

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


def install_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(timezone.now().replace(microsecond=0))
    monkeypatch.setattr(clock, "now", fake.now)
    monkeypatch.setattr(clock, "sleep", fake.sleep)
    return fake
