"""Logging for machines: the refresh context on every line, and the JSON formatter.

While a refresh runs (monitoring.observe.refresh_observed), every record logged in its
thread carries `connection_id`, `source` and `duration_ms` (so far): with
LOG_FORMAT=json they become fields, so a failure's warning and the refresh's closing
line (which adds `outcome` and `reason`) can be joined without parsing text.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass

from pythonjsonlogger.json import JsonFormatter

from integrations import clock

# asctime, level, logger and message first; anything passed in `extra` follows as fields.
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"


@dataclass(frozen=True)
class RefreshContext:
    connection_id: int
    source: str
    started: float

    def duration_ms(self) -> int:
        return round((clock.monotonic() - self.started) * 1000)


current_refresh: ContextVar[RefreshContext | None] = ContextVar("current_refresh", default=None)


class RefreshContextFilter(logging.Filter):
    """Adds the running refresh's fields to records that do not carry them already."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = current_refresh.get()
        if context is not None and not hasattr(record, "connection_id"):
            record.connection_id = context.connection_id
            record.source = context.source
            record.duration_ms = context.duration_ms()
        return True


def json_formatter() -> logging.Formatter:
    return JsonFormatter(JSON_FIELDS, rename_fields={"levelname": "level", "asctime": "time", "name": "logger"})
