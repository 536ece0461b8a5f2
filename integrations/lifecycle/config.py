"""Whether this portal can talk to Atlassian at all: the one `jira_configured()`."""

from __future__ import annotations

from django.conf import settings

# Everything a consent, a callback and a refresh need from the Atlassian app.
REQUIRED_SETTINGS = ("ATLASSIAN_CLIENT_ID", "ATLASSIAN_CLIENT_SECRET", "ATLASSIAN_REDIRECT_URI")


class ConfigurationError(Exception):
    """The portal itself is misconfigured (client credentials, settings): stop the run."""


def configuration_problem() -> str | None:
    """Why Jira cannot be used (the settings that are missing), or None."""
    missing = [name for name in REQUIRED_SETTINGS if not getattr(settings, name, "")]
    return f"{' and '.join(missing)} not set: Jira is not configured." if missing else None


def jira_configured() -> bool:
    return configuration_problem() is None
