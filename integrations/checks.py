"""System checks (manage.py check, runserver, migrate): a webhook setup that cannot work
is said at start-up, not discovered when no live update ever arrives."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Warning, register

from integrations.lifecycle.config import ConfigurationError, jira_configured
from integrations.lifecycle.webhooks import WEBHOOK_SCOPE, callback_url, webhooks_enabled


@register()
def webhook_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if not (jira_configured() and webhooks_enabled()):
        return []
    problems: list[CheckMessage] = []
    if WEBHOOK_SCOPE not in settings.ATLASSIAN_SCOPES:
        problems.append(
            Warning(
                f"ATLASSIAN_WEBHOOKS is on but ATLASSIAN_SCOPES lacks {WEBHOOK_SCOPE}: no webhook can be registered.",
                hint=f"Add {WEBHOOK_SCOPE} to ATLASSIAN_SCOPES (and to the app in the developer console), "
                "or set ATLASSIAN_WEBHOOKS=false.",
                id="integrations.W001",
            )
        )
    try:
        callback_url()
    except ConfigurationError as exc:
        problems.append(Warning(str(exc), id="integrations.W002"))
    return problems
