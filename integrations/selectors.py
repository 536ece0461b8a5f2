"""Reads for pages: what the settings page and My Jira show."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet

from accounts.models import User
from integrations.lifecycle.config import jira_configured
from integrations.lifecycle.connect import CONNECTED_APPS_URL
from integrations.models import JiraConnection, JiraSite


def connections_for_user(*, user: User) -> QuerySet[JiraConnection]:
    # Tokens are never needed to render a page: don't decrypt them.
    return (
        JiraConnection.objects.filter(user=user)
        .defer("access_token", "refresh_token")
        .prefetch_related(Prefetch("sites", queryset=JiraSite.objects.order_by("name", "url")))
        .order_by("created_at", "pk")
    )


def settings_context(*, user: User) -> dict[str, Any]:
    return {
        "jira_configured": jira_configured(),
        "connections": list(connections_for_user(user=user)),
        "connected_apps_url": CONNECTED_APPS_URL,
    }
