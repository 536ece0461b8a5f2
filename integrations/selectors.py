"""Reads for pages: what the settings page and My Jira show."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Prefetch, QuerySet

from accounts.models import User
from integrations import clock
from integrations.lifecycle.config import jira_configured
from integrations.lifecycle.connect import CONNECTED_APPS_URL
from integrations.lifecycle.webhooks import WEBHOOK_SCOPE, has_webhook_scope, scopes_missing, webhooks_requested
from integrations.models import JiraConnection, JiraSite
from integrations.webhook_health import SiteWebhookHealth, webhook_health


@dataclass(frozen=True)
class SitePanel:
    site: JiraSite
    # None: no webhook for this site (webhooks off, the scope missing, or not yet made).
    webhooks: SiteWebhookHealth | None


@dataclass(frozen=True)
class ConnectionPanel:
    connection: JiraConnection
    sites: list[SitePanel]
    # Scopes the portal asks for now that this connection was not granted (scope drift):
    # it keeps working with what it has; reconnecting grants the rest.
    missing_scopes: list[str]
    # Webhooks are on, but this connection cannot have them until it is reconnected.
    live_updates_need_reconnect: bool


def connections_for_user(*, user: User) -> QuerySet[JiraConnection]:
    # Tokens are never needed to render a page: don't decrypt them.
    return (
        JiraConnection.objects.filter(user=user)
        .defer("access_token", "refresh_token")
        .prefetch_related(
            Prefetch("sites", queryset=JiraSite.objects.order_by("name", "url").prefetch_related("webhooks"))
        )
        .order_by("created_at", "pk")
    )


def _panel(connection: JiraConnection) -> ConnectionPanel:
    now = clock.now()
    return ConnectionPanel(
        connection=connection,
        sites=[
            SitePanel(site=site, webhooks=webhook_health(webhooks=site.webhooks.all(), now=now))
            for site in connection.sites.all()
        ],
        missing_scopes=scopes_missing(connection) if jira_configured() else [],
        live_updates_need_reconnect=webhooks_requested() and not has_webhook_scope(connection),
    )


def settings_context(*, user: User) -> dict[str, Any]:
    return {
        "jira_configured": jira_configured(),
        "live_updates": webhooks_requested(),
        "webhook_scope": WEBHOOK_SCOPE,
        "connections": [_panel(connection) for connection in connections_for_user(user=user)],
        "connected_apps_url": CONNECTED_APPS_URL,
    }
