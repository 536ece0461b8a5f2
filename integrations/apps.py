from __future__ import annotations

from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    name = "integrations"
    verbose_name = "Jira connections"

    def ready(self) -> None:
        # Registers the system checks, and My Jira's receiver of jira_event_received.
        from integrations import checks  # noqa: F401
        from integrations.myjira import receivers  # noqa: F401
