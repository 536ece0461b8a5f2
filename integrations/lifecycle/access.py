"""A usable access token for every Jira call: the one token provider, the one rule
for "still usable", and `jira_for(user)` for portal code.

Atlassian's token reply is stored with its expiry already brought forward by
atlassian.EXPIRY_MARGIN (the time a call spends in flight): that is the one margin.
A token is usable until that stored expiry; after it, or when Jira rejects it, the
caller refreshes through lifecycle.refresh, single-flight across hosts, and waits
briefly when another worker's refresh is under way.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Q
from django.views.decorators.debug import sensitive_variables

from accounts.models import User
from integrations import atlassian, clock
from integrations.lifecycle.refresh import RefreshOutcome, connection_refresh_for_access
from integrations.lifecycle.status import connection_mark_unreadable
from integrations.models import ConnectionStatus, JiraConnection, JiraSite
from monitoring.observe import ClaimWait, claim_wait_observed

# Use is recorded at most this often per connection: the scheduled run needs to know
# "used today", not every call.
USE_RECORD_INTERVAL = timedelta(minutes=5)
# How long an API caller waits for another worker's refresh before giving up.
CLAIM_WAIT = timedelta(seconds=15)
CLAIM_POLL_SECONDS = 0.2


class ConnectionUnusableError(Exception):
    """The connection cannot be used now: it needs reconnecting, or refresh is failing."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


def token_usable(*, token: str | None, expires_at: datetime | None, now: datetime) -> bool:
    return token is not None and expires_at is not None and expires_at > now


def connection_record_use(*, connection_id: int, now: datetime) -> bool:
    """Note that portal code called Jira with the connection (lifecycle.due keeps used
    connections warm). One conditional UPDATE that writes at most every USE_RECORD_INTERVAL;
    it touches neither the tokens nor the version, so no refresh's compare-and-swap cares."""
    recent = Q(last_used_at__isnull=False, last_used_at__gt=now - USE_RECORD_INTERVAL)
    return JiraConnection.objects.filter(pk=connection_id).exclude(recent).update(last_used_at=now) == 1


def _backoff_message(connection: JiraConnection, *, now: datetime) -> str | None:
    """Why a refresh must wait (the connection's backoff, Retry-After included), or None."""
    until = connection.next_attempt_at
    if until is None or until <= now:
        return None
    if connection.status_reason == atlassian.RateLimitedError.reason:
        return f"Atlassian asked us to slow down; try again after {until:%H:%M:%S} UTC."
    return f"Jira is not reachable right now; the next try is at {until:%H:%M:%S} UTC."


@sensitive_variables("rejected")
def connection_access_token(*, connection_id: int, rejected: str | None = None) -> str:
    """A usable access token for the connection; refreshes first when the stored one has
    expired (or is `rejected`, the one Jira just refused), waits for another worker's refresh."""
    return _access_token(connection_id=connection_id, rejected=rejected)[0]


@sensitive_variables("rejected")
def _access_token(*, connection_id: int, rejected: str | None) -> tuple[str, datetime | None]:
    with claim_wait_observed() as wait:
        return _poll_for_token(connection_id=connection_id, rejected=rejected, wait=wait)


@sensitive_variables("rejected")
def _poll_for_token(*, connection_id: int, rejected: str | None, wait: ClaimWait) -> tuple[str, datetime | None]:
    deadline = clock.now() + CLAIM_WAIT
    refreshed = False
    while True:
        now = clock.now()
        connection = JiraConnection.objects.filter(pk=connection_id).first()
        if connection is None:
            raise ConnectionUnusableError("This Jira connection no longer exists.", permanent=True)
        if connection.needs_reconnect:
            raise ConnectionUnusableError(connection.status_message or "Reconnect Jira.", permanent=True)
        if connection.access_token is None or connection.refresh_token is None:
            connection_mark_unreadable(connection_id=connection_id)
            continue
        stale = rejected is not None and connection.access_token == rejected
        usable = token_usable(token=connection.access_token, expires_at=connection.access_token_expires_at, now=now)
        if refreshed or (usable and not stale):
            # A token this call just obtained is used even if Atlassian gave it a short
            # (or garbled, hence zero) lifetime: refreshing again would loop forever.
            return connection.access_token, connection.access_token_expires_at
        waiting = _backoff_message(connection, now=now)
        if waiting is not None:
            # Page views honour the backoff like the scheduled run: otherwise every reload
            # by every user of a failing connection knocks on the token endpoint again.
            raise ConnectionUnusableError(waiting, permanent=False)
        result = connection_refresh_for_access(connection_id=connection_id, rejected=stale)
        refreshed = result.outcome == RefreshOutcome.REFRESHED
        if result.outcome == RefreshOutcome.TRANSIENT_FAILURE:
            raise ConnectionUnusableError(f"Jira is not reachable right now: {result.message}", permanent=False)
        if result.outcome == RefreshOutcome.CLAIMED_ELSEWHERE:
            if clock.now() >= deadline:
                wait.timed_out = True
                raise ConnectionUnusableError("Jira is busy refreshing this connection; try again.", permanent=False)
            # The refresh under way elsewhere will replace the token: read it then.
            wait.polling()
            clock.sleep(CLAIM_POLL_SECONDS)
        # Otherwise (refreshed, superseded, not due, needs reconnect, gone): read the row again.


class ConnectionTokens:
    """The token provider (atlassian.TokenProvider) for one connection's Jira clients.

    Keeps the token it last handed out while it stays usable, so a page that calls
    several sites of one connection reads the database once; the lock makes those sites
    wait for one renewal instead of racing. `preloaded` takes the token from a row the
    caller has already loaded (My Jira loads every connection in one query). The first
    token handed out records the connection's use, outside the lock (not for `upkeep`).
    """

    def __init__(self, *, connection_id: int, last_used_at: datetime | None = None, upkeep: bool = False) -> None:
        self.connection_id = connection_id
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at: datetime | None = None
        self._last_used_at = last_used_at
        # The portal's own upkeep (webhooks) is not the user's use: it must not keep the
        # connection warm, or every webhook check would buy a day of token refreshes.
        self._use_recorded = upkeep

    @classmethod
    def preloaded(cls, connection: JiraConnection) -> ConnectionTokens:
        tokens = cls(connection_id=connection.pk, last_used_at=connection.last_used_at)
        tokens._token = connection.access_token
        tokens._expires_at = connection.access_token_expires_at
        return tokens

    def __repr__(self) -> str:
        return f"<ConnectionTokens connection_id={self.connection_id}>"

    def _usable(self) -> bool:
        return token_usable(token=self._token, expires_at=self._expires_at, now=clock.now())

    def _renew(self, *, rejected: str | None) -> str:
        token, expires_at = _access_token(connection_id=self.connection_id, rejected=rejected)
        # A token Atlassian handed out already expired (a garbled lifetime) is kept until
        # Jira refuses it: asking again at every call would refresh at every call.
        self._token = token
        self._expires_at = expires_at if expires_at is not None and expires_at > clock.now() else None
        return token

    def access_token(self) -> str:
        with self._lock:
            if self._token is None or (self._expires_at is not None and not self._usable()):
                self._renew(rejected=None)
            token = self._token
        assert token is not None
        self.record_use()
        return token

    def record_use(self) -> None:
        """Record the connection's use once per provider (a no-op within USE_RECORD_INTERVAL)."""
        if self._use_recorded:
            return
        self._use_recorded = True
        now = clock.now()
        if self._last_used_at is None or self._last_used_at <= now - USE_RECORD_INTERVAL:
            connection_record_use(connection_id=self.connection_id, now=now)

    @sensitive_variables("rejected")
    def refreshed_access_token(self, *, rejected: str) -> str:
        with self._lock:
            if self._token is not None and self._token != rejected:
                # Another site of this connection renewed it meanwhile.
                return self._token
            return self._renew(rejected=rejected)


@dataclass(frozen=True)
class SiteClient:
    connection: JiraConnection
    site: JiraSite
    client: atlassian.JiraClient


def jira_for(user: User) -> Iterator[SiteClient]:
    """A Jira REST client for every enabled site of every usable connection of `user`.

    for site in jira_for(request.user):
        me = site.client.myself()
    """
    connections = (
        JiraConnection.objects.filter(user=user)
        .exclude(status=ConnectionStatus.NEEDS_RECONNECT)
        .prefetch_related("sites")
        .defer("access_token", "refresh_token")
        .order_by("pk")
    )
    for connection in connections:
        tokens = ConnectionTokens(connection_id=connection.pk, last_used_at=connection.last_used_at)
        for site in connection.sites.all():
            if site.enabled:
                client = atlassian.JiraClient(cloud_id=site.cloud_id, site_url=site.url, tokens=tokens)
                yield SiteClient(connection=connection, site=site, client=client)
