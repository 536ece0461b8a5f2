"""A connection's beginning and end: the callback's upsert, its sites, disconnect."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.views.decorators.debug import sensitive_variables

from accounts.models import User
from integrations import atlassian, clock
from integrations.lifecycle.events import event_record
from integrations.lifecycle.webhooks import connection_webhooks_delete, connection_webhooks_sync
from integrations.models import Actor, ConnectionStatus, EventKind, JiraConnection, JiraSite

logger = logging.getLogger(__name__)

# Atlassian offers apps no way to revoke a grant: users remove it here.
CONNECTED_APPS_URL = "https://id.atlassian.com/manage-profile/apps"


@dataclass(frozen=True)
class ConnectResult:
    connection: JiraConnection
    created: bool
    site_count: int


@sensitive_variables("code", "tokens", "token_fields")
def connection_create_from_callback(*, user: User, code: str) -> ConnectResult:
    """Exchange the code, read sites and identity, then upsert: all or nothing."""
    tokens = atlassian.exchange_code(code=code)
    assert tokens.refresh_token is not None  # exchange_code guarantees it
    # Sites and identity are independent reads: fetch them side by side.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="jira-connect") as pool:
        sites_future = pool.submit(atlassian.accessible_resources, access_token=tokens.access_token)
        me_future = pool.submit(atlassian.me, access_token=tokens.access_token)
        identity = me_future.result()
        sites = sites_future.result()
    now = clock.now()
    token_fields = {
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "access_token_expires_at": tokens.expires_at,
        "scopes": tokens.scopes or list(settings.ATLASSIAN_SCOPES),
        "tokens_issued_at": now,
        # Every consent starts a new grant, and Atlassian's 365-day limit with it.
        "first_consented_at": now,
        "consent_warnings_sent": 0,
        "last_refreshed_at": None,
        "status": ConnectionStatus.ACTIVE,
        "status_reason": "",
        "status_message": "",
        "failure_count": 0,
        "next_attempt_at": None,
        "claim_id": None,
        "claimed_until": None,
    }
    profile = {
        "account_name": identity.name,
        "account_email": identity.email,
        "account_avatar_url": identity.picture,
    }
    with transaction.atomic():
        existing = (
            JiraConnection.objects.select_for_update()
            .filter(user=user, account_id=identity.account_id)
            .only("pk")
            .first()
        )
        created = False
        if existing is None:
            try:
                # A savepoint: a second tab finishing the same first connect at the
                # same moment wins the insert, and this one becomes the update below.
                with transaction.atomic():
                    connection = JiraConnection.objects.create(
                        user=user, account_id=identity.account_id, **profile, **token_fields
                    )
                created = True
            except IntegrityError:
                existing = (
                    JiraConnection.objects.select_for_update()
                    .filter(user=user, account_id=identity.account_id)
                    .only("pk")
                    .get()
                )
        if existing is not None:
            # Named columns only, and version bumped: a refresh in flight for the
            # old grant then loses its compare-and-swap instead of clobbering this.
            JiraConnection.objects.filter(pk=existing.pk).update(**profile, **token_fields, version=F("version") + 1)
            connection = JiraConnection.objects.get(pk=existing.pk)
        _sites_sync(connection=connection, sites=sites)
        event_record(
            connection=connection,
            kind=EventKind.CONNECTED if created else EventKind.RECONNECTED,
            actor=Actor.USER,
            actor_user=user,
            message=f"{len(sites)} site(s), scopes: {' '.join(connection.scopes)}",
            detail={"sites": [s.url for s in sites], "scopes": connection.scopes},
        )
    logger.info(
        "Jira %s: connection=%s user=%s sites=%d",
        "connected" if created else "reconnected",
        connection.pk,
        user.pk,
        len(sites),
    )
    # After the commit, outside any transaction: live updates start now, and a failure
    # here is recorded on the webhook rows for the scheduled run, never the connect's.
    connection_webhooks_sync(connection_id=connection.pk)
    return ConnectResult(connection=connection, created=created, site_count=len(sites))


def _sites_sync(*, connection: JiraConnection, sites: list[atlassian.Site]) -> None:
    """New sites appear (enabled), gone ones go, known ones keep the user's switch."""
    known = {site.cloud_id: site for site in connection.sites.all()}
    seen = set()
    for site in sites:
        seen.add(site.cloud_id)
        values = {"name": site.name, "url": site.url, "avatar_url": site.avatar_url, "scopes": site.scopes}
        if site.cloud_id in known:
            JiraSite.objects.filter(pk=known[site.cloud_id].pk).update(**values)
        else:
            JiraSite.objects.create(connection=connection, cloud_id=site.cloud_id, **values)
    JiraSite.objects.filter(connection=connection).exclude(cloud_id__in=seen).delete()


def site_set_enabled(*, user: User, site_id: int, enabled: bool) -> JiraSite:
    site = JiraSite.objects.select_related("connection").get(pk=site_id, connection__user=user)
    if site.enabled != enabled:
        site.enabled = enabled
        site.save(update_fields=["enabled", "updated_at"])
        event_record(
            connection=site.connection,
            kind=EventKind.SITE_TOGGLED,
            actor=Actor.USER,
            actor_user=user,
            message=f"{site.url} {'enabled' if enabled else 'disabled'}",
            detail={"cloud_id": site.cloud_id, "enabled": enabled},
        )
    return site


def connection_disconnect(*, connection: JiraConnection, actor: Actor, actor_user: User | None) -> None:
    """Delete the tokens and the connection; its events stay. Atlassian offers no
    revocation endpoint: the user removes the grant at CONNECTED_APPS_URL. Its webhooks
    are deleted at Atlassian first, best effort: a failure never blocks the disconnect."""
    try:
        connection_webhooks_delete(connection=connection)
    except Exception:
        logger.exception("Disconnect: deleting connection %s's webhooks failed; disconnecting anyway.", connection.pk)
    with transaction.atomic():
        event_record(
            connection=connection,
            kind=EventKind.STAFF_DISCONNECT if actor == Actor.STAFF else EventKind.DISCONNECTED,
            actor=actor,
            actor_user=actor_user,
            message=f"Disconnected {connection.account_name or connection.account_id}",
            detail={"account_id": connection.account_id},
        )
        JiraConnection.objects.filter(pk=connection.pk).delete()
    logger.info("Jira disconnected: connection=%s by %s", connection.pk, actor)
