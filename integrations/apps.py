from __future__ import annotations

from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    name = "integrations"
    verbose_name = "Jira connections"

    def ready(self) -> None:
        # Registers the system checks.
        from integrations import checks  # noqa: F401
