from __future__ import annotations

from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"

    def ready(self) -> None:
        from django.core.signals import request_finished

        from monitoring import recorder

        # Web workers write their buffered counts after a response has gone out,
        # never on the user's request path (recorder.flush_if_due).
        request_finished.connect(recorder.flush_if_due_on_request_end, dispatch_uid="monitoring-flush")
