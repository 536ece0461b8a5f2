"""Where the rules about Jira connections live: connect, refresh, disconnect.

Typed, keyword-only functions; views and commands stay thin around them.

Refresh is single-flight per connection across threads, processes and hosts, on
SQLite and PostgreSQL alike, without holding a transaction open during HTTP:

1. claim: one conditional UPDATE sets (claim_id, claimed_until) where no live claim
   exists; exactly one row changed means this worker owns the refresh;
2. re-read and re-check: another worker may have refreshed meanwhile;
3. call Atlassian with the stored refresh token;
4. write the rotated pair back at once with compare-and-swap on the version read
   in step 2 (and release the claim in the same UPDATE), before anything else.

A crashed worker's claim lapses after CLAIM_LEASE, well inside Atlassian's 10-minute
reuse leeway, so the next run retries with the same refresh token safely.
"""

from __future__ import annotations

import enum
import logging
import random
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, OperationalError, transaction
from django.db import connection as db_connection
from django.db.models import F, Q, QuerySet
from django.urls import reverse
from django.views.decorators.debug import sensitive_variables

from accounts.models import User
from integrations import atlassian, clock
from integrations.models import (
    Actor,
    ConnectionEvent,
    ConnectionStatus,
    EventKind,
    JiraConnection,
    JiraSite,
)

logger = logging.getLogger(__name__)

CLAIM_LEASE = timedelta(minutes=2)
DEFAULT_DUE_WITHIN = timedelta(minutes=15)
DEFAULT_MAX_IDLE = timedelta(days=30)
# The API client refreshes a token that expires within this.
MIN_TOKEN_VALIDITY = timedelta(seconds=60)
BACKOFF_BASE = timedelta(minutes=1)
BACKOFF_CAP = timedelta(hours=1)
# How long an API caller waits for another worker's refresh before giving up.
CLAIM_WAIT = timedelta(seconds=15)
CLAIM_POLL_SECONDS = 0.2

CONNECTED_APPS_URL = "https://id.atlassian.com/manage-profile/apps"


class ConfigurationError(Exception):
    """The portal itself is misconfigured (client credentials, settings): stop the run."""


class ConnectionUnusableError(Exception):
    """The connection cannot be used now: it needs reconnecting, or refresh is failing."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


# --- Events ---------------------------------------------------------------------------


def event_record(
    *,
    connection: JiraConnection | None,
    kind: EventKind,
    actor: Actor = Actor.SYSTEM,
    actor_user: User | None = None,
    message: str = "",
    detail: dict[str, Any] | None = None,
    user: User | None = None,
    account_id: str = "",
) -> ConnectionEvent:
    return ConnectionEvent.objects.create(
        connection=connection,
        user_id=connection.user_id if connection is not None else (user.pk if user else None),
        account_id=connection.account_id if connection is not None else account_id,
        kind=kind,
        actor=actor,
        actor_user=actor_user,
        message=message[:500],
        detail=detail or {},
        created_at=clock.now(),
    )


# --- Connect --------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectResult:
    connection: JiraConnection
    created: bool
    site_count: int


def jira_configured() -> bool:
    return bool(settings.ATLASSIAN_CLIENT_ID and settings.ATLASSIAN_CLIENT_SECRET and settings.ATLASSIAN_REDIRECT_URI)


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


# --- Disconnect and status -------------------------------------------------------------


def connection_disconnect(*, connection: JiraConnection, actor: Actor, actor_user: User | None) -> None:
    """Delete the tokens and the connection; its events stay. Atlassian offers no
    revocation endpoint: the user removes the grant at CONNECTED_APPS_URL."""
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


def connection_mark_needs_reconnect(
    *,
    connection_id: int,
    reason: str,
    message: str,
    actor: Actor = Actor.SYSTEM,
    actor_user: User | None = None,
    only_if_version: int | None = None,
) -> bool:
    """Turn a connection to needs_reconnect once; email its user. False if nothing changed
    (already marked, gone, or — with only_if_version — the tokens moved on meanwhile)."""
    rows = JiraConnection.objects.filter(pk=connection_id).exclude(status=ConnectionStatus.NEEDS_RECONNECT)
    if only_if_version is not None:
        rows = rows.filter(version=only_if_version)
    changed = rows.update(
        status=ConnectionStatus.NEEDS_RECONNECT,
        status_reason=reason[:64],
        status_message=message[:500],
        next_attempt_at=None,
        claim_id=None,
        claimed_until=None,
        updated_at=clock.now(),
    )
    if changed != 1:
        return False
    connection = JiraConnection.objects.select_related("user").get(pk=connection_id)
    event_record(
        connection=connection,
        kind=EventKind.STAFF_MARK_NEEDS_RECONNECT if actor == Actor.STAFF else EventKind.NEEDS_RECONNECT,
        actor=actor,
        actor_user=actor_user,
        message=message,
        detail={"reason": reason},
    )
    logger.warning("Jira connection %s needs reconnect: %s", connection_id, reason)
    _email_needs_reconnect(connection=connection, message=message)
    return True


def _email_needs_reconnect(*, connection: JiraConnection, message: str) -> None:
    link = f"{settings.SITE_URL}{reverse('settings')}"
    body = (
        f"Your Jira connection ({connection.account_name or connection.account_id}) stopped working "
        f"and needs to be reconnected.\n\nWhy: {message}\n\n"
        f"Reconnect it from your settings page: {link}\n"
    )
    try:
        send_mail("Reconnect your Jira account", body, None, [connection.user.email])
    except Exception:
        # The status change is what matters; a mail outage must not undo it.
        logger.exception("Could not email user %s about connection %s", connection.user_id, connection.pk)


# --- Refresh --------------------------------------------------------------------------


class RefreshOutcome(enum.StrEnum):
    REFRESHED = "refreshed"
    NOT_DUE = "not_due"
    CLAIMED_ELSEWHERE = "claimed_elsewhere"
    TRANSIENT_FAILURE = "transient_failure"
    NEEDS_RECONNECT = "needs_reconnect"
    GONE = "gone"


@dataclass(frozen=True)
class RefreshResult:
    connection_id: int
    outcome: RefreshOutcome
    message: str = ""
    retry_at: datetime | None = None


def _single_flight_enabled() -> bool:
    # Test-only switch for the proof suite's control run (it must be able to lose).
    return not getattr(settings, "UNSAFE_DISABLE_REFRESH_CLAIM", False)


def refresh_is_due(connection: JiraConnection, *, now: datetime, due_within: timedelta, max_idle: timedelta) -> bool:
    if connection.status == ConnectionStatus.NEEDS_RECONNECT:
        return False
    expires = connection.access_token_expires_at
    return expires is None or expires <= now + due_within or connection.tokens_issued_at <= now - max_idle


def _due_branches(*, now: datetime, due_within: timedelta, max_idle: timedelta) -> list[Q]:
    # Each branch is a range on one partial index (conn_due_expiry_idx, conn_due_idle_idx).
    return [
        Q(access_token_expires_at__lte=now + due_within),
        Q(access_token_expires_at__isnull=True),
        Q(tokens_issued_at__lte=now - max_idle),
    ]


def _not_backing_off(*, now: datetime) -> Q:
    return Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)


def due_filter(*, now: datetime, due_within: timedelta, max_idle: timedelta, ignore_backoff: bool = False) -> Q:
    due = Q()
    for branch in _due_branches(now=now, due_within=due_within, max_idle=max_idle):
        due |= branch
    query = ~Q(status=ConnectionStatus.NEEDS_RECONNECT) & due
    return query if ignore_backoff else query & _not_backing_off(now=now)


def connections_due(
    *,
    now: datetime,
    due_within: timedelta = DEFAULT_DUE_WITHIN,
    max_idle: timedelta = DEFAULT_MAX_IDLE,
    limit: int | None = None,
    user_email: str | None = None,
    ignore_backoff: bool = False,
) -> list[int]:
    """Ids of connections to refresh, soonest expiry first (no tokens decrypted).

    One UNION of index range scans, one per due condition: an OR of them lets SQLite's
    planner walk a whole index, a cost that grows with the table instead of the due rows.
    """
    rows = JiraConnection.objects.filter(~Q(status=ConnectionStatus.NEEDS_RECONNECT))
    if not ignore_backoff:
        rows = rows.filter(_not_backing_off(now=now))
    if user_email:
        rows = rows.filter(user__email__iexact=user_email.strip())
    first, *others = (
        rows.filter(branch).values_list("pk", "access_token_expires_at")
        for branch in _due_branches(now=now, due_within=due_within, max_idle=max_idle)
    )
    found: list[tuple[int, datetime | None]] = list(first.union(*others))
    found.sort(key=lambda row: (row[1] is not None, row[1] or now, row[0]))
    ids = [pk for pk, _ in found]
    return ids[:limit] if limit else ids


def _backoff(*, failures: int, retry_after: float | None) -> timedelta:
    if retry_after is not None:
        return timedelta(seconds=retry_after)
    # The exponent is bounded: 2**1024 no longer fits a float, and a connection failing
    # hourly reaches that many failures in six weeks.
    delay = BACKOFF_BASE.total_seconds() * 2 ** min(max(0, failures - 1), 32)
    # The cap holds after the jitter too: "at most an hour" means at most an hour.
    return timedelta(seconds=min(BACKOFF_CAP.total_seconds(), delay * random.uniform(0.7, 1.3)))


def _claim(*, connection_id: int, claim: uuid.UUID, ignore_backoff: bool, due: Q | None) -> bool:
    # The lease counts from the wall clock, never from a `now` the caller took earlier:
    # a batch that started ten minutes ago would otherwise take leases that have
    # already lapsed, and a second worker could take over mid-refresh.
    now = clock.now()
    rows = JiraConnection.objects.filter(pk=connection_id).exclude(status=ConnectionStatus.NEEDS_RECONNECT)
    if due is not None:
        # Runs that overlap all read the same due list: one already refreshed by another
        # run costs this one a single UPDATE that matches nothing, not claim-read-release.
        rows = rows.filter(due)
    if not ignore_backoff:
        rows = rows.filter(_not_backing_off(now=now))
    if _single_flight_enabled():
        rows = rows.filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
    return rows.update(claim_id=claim, claimed_until=now + CLAIM_LEASE) == 1


def _unclaimed_outcome(*, connection_id: int) -> RefreshResult:
    """Why a claim failed: gone, needs reconnect, backing off, or another worker's lease."""
    row = (
        JiraConnection.objects.filter(pk=connection_id)
        .values_list("status", "claimed_until", "next_attempt_at")
        .first()
    )
    if row is None:
        return RefreshResult(connection_id, RefreshOutcome.GONE)
    status, claimed_until, next_attempt_at = row
    now = clock.now()
    if status == ConnectionStatus.NEEDS_RECONNECT:
        return RefreshResult(connection_id, RefreshOutcome.NEEDS_RECONNECT, "Needs reconnect.")
    if (claimed_until is None or claimed_until < now) and next_attempt_at is not None and next_attempt_at > now:
        # Another worker failed it since the due list was read: not ours to retry yet.
        return RefreshResult(connection_id, RefreshOutcome.NOT_DUE, "Backing off.", next_attempt_at)
    if claimed_until is not None and claimed_until >= now:
        return RefreshResult(connection_id, RefreshOutcome.CLAIMED_ELSEWHERE)
    # Free and not backing off, yet the claim matched nothing: it was no longer due
    # (another run refreshed it since the due list was read).
    return RefreshResult(connection_id, RefreshOutcome.NOT_DUE)


def _release(*, connection_id: int, claim: uuid.UUID) -> None:
    JiraConnection.objects.filter(pk=connection_id, claim_id=claim).update(claim_id=None, claimed_until=None)


@sensitive_variables("refresh_token", "tokens")
def _call_refresh(*, refresh_token: str) -> atlassian.TokenSet:
    try:
        return atlassian.refresh(refresh_token=refresh_token)
    except atlassian.TransientError as exc:
        # No status (timeout, reset), a gateway's 502/504 or a garbled 200: Atlassian
        # may have rotated and we never saw the new pair. The same token is accepted
        # again for 10 minutes, so one immediate retry recovers the pair instead of
        # waiting a backoff that could outlast the leeway.
        ambiguous = exc.status in (None, 502, 504) or isinstance(exc, atlassian.InvalidResponseError)
        if not ambiguous:
            raise
        logger.info("Refresh reply lost (%s); retrying once with the same token.", exc.reason)
        return atlassian.refresh(refresh_token=refresh_token)


@sensitive_variables("refresh_token", "tokens")
def connection_refresh(
    *,
    connection_id: int,
    now: datetime | None = None,
    due_within: timedelta = DEFAULT_DUE_WITHIN,
    max_idle: timedelta = DEFAULT_MAX_IDLE,
    force: bool = False,
    ignore_backoff: bool = False,
    actor: Actor = Actor.SYSTEM,
    actor_user: User | None = None,
) -> RefreshResult:
    """Refresh one connection if due (or `force`), single-flight. Raises
    ConfigurationError when Atlassian refuses our client credentials."""
    now = now or clock.now()
    claim = uuid.uuid4()
    due = None if force else due_filter(now=now, due_within=due_within, max_idle=max_idle, ignore_backoff=True)
    if not _claim(connection_id=connection_id, claim=claim, ignore_backoff=ignore_backoff or force, due=due):
        return _unclaimed_outcome(connection_id=connection_id)
    released = False
    try:
        connection = JiraConnection.objects.get(pk=connection_id)
        if not force and not refresh_is_due(connection, now=now, due_within=due_within, max_idle=max_idle):
            return RefreshResult(connection_id, RefreshOutcome.NOT_DUE)
        refresh_token = connection.refresh_token
        if refresh_token is None:
            connection_mark_needs_reconnect(
                connection_id=connection_id,
                reason="token_unreadable",
                message="The stored token could not be decrypted (encryption key removed or data damaged).",
            )
            return RefreshResult(connection_id, RefreshOutcome.NEEDS_RECONNECT, "Stored token unreadable.")
        version = connection.version
        try:
            tokens = _call_refresh(refresh_token=refresh_token)
        except atlassian.ClientCredentialsError as exc:
            raise ConfigurationError(exc.message) from None
        except atlassian.GrantRevokedError as exc:
            return _refresh_revoked(connection=connection, version=version, error=exc)
        except atlassian.TransientError as exc:
            return _refresh_failed(connection=connection, claim=claim, now=now, error=exc)
        result = _refresh_store(
            connection=connection, version=version, tokens=tokens, now=now, actor=actor, actor_user=actor_user
        )
        # A successful store cleared the claim in its own UPDATE: skip a round trip.
        released = result.outcome == RefreshOutcome.REFRESHED
        return result
    finally:
        if not released:
            _release(connection_id=connection_id, claim=claim)


STORE_ATTEMPTS = 3


@sensitive_variables("values")
def _update_surviving_outage(rows: QuerySet[JiraConnection], **values: Any) -> int:
    """UPDATE, retried through a brief database outage (a locked SQLite file, a PostgreSQL
    failover): once Atlassian has rotated the pair, a dropped write costs the grant.
    If a failed attempt did commit, the retry loses its compare-and-swap: harmless."""
    for attempt in range(1, STORE_ATTEMPTS + 1):
        try:
            return rows.update(**values)
        except OperationalError:
            # Inside a caller's transaction the error has aborted it: nothing to retry.
            if attempt == STORE_ATTEMPTS or db_connection.in_atomic_block:
                raise
            logger.warning("Database write failed (attempt %d of %d); retrying.", attempt, STORE_ATTEMPTS)
            db_connection.close()
            clock.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


@sensitive_variables("tokens")
def _refresh_store(
    *,
    connection: JiraConnection,
    version: int,
    tokens: atlassian.TokenSet,
    now: datetime,
    actor: Actor,
    actor_user: User | None,
) -> RefreshResult:
    # First thing after the reply: persist the rotated pair (CAS on the version). A
    # connection marked needs_reconnect meanwhile (by staff, or by a worker that met a
    # dead grant after our lease lapsed) stays marked: its grant is gone or unwanted.
    written = _update_surviving_outage(
        JiraConnection.objects.filter(pk=connection.pk, version=version).exclude(
            status=ConnectionStatus.NEEDS_RECONNECT
        ),
        access_token=tokens.access_token,
        # No refresh_token in the reply: the old one is still the live one.
        refresh_token=tokens.refresh_token or connection.refresh_token,
        access_token_expires_at=tokens.expires_at,
        scopes=tokens.scopes or connection.scopes,
        tokens_issued_at=now,
        last_refreshed_at=now,
        status=ConnectionStatus.ACTIVE,
        status_reason="",
        status_message="",
        failure_count=0,
        next_attempt_at=None,
        version=F("version") + 1,
        claim_id=None,
        claimed_until=None,
        updated_at=now,
    )
    if written != 1:
        # Someone wrote newer tokens (a reconnect, or a worker after our lease
        # lapsed), or marked it needs_reconnect: theirs stands.
        logger.warning("Refresh of connection %s superseded by a newer write.", connection.pk)
        return RefreshResult(connection.pk, RefreshOutcome.CLAIMED_ELSEWHERE, "Superseded by a newer write.")
    event_record(
        connection=connection,
        kind=EventKind.REFRESHED if actor == Actor.SYSTEM else EventKind.STAFF_REFRESH,
        actor=actor,
        actor_user=actor_user,
        message=f"Access token valid until {tokens.expires_at:%Y-%m-%d %H:%M:%S} UTC",
        detail={"rotated": tokens.refresh_token is not None, "version": version + 1},
    )
    return RefreshResult(connection.pk, RefreshOutcome.REFRESHED)


def _refresh_revoked(*, connection: JiraConnection, version: int, error: atlassian.GrantRevokedError) -> RefreshResult:
    message = (
        "Atlassian no longer accepts this connection (it was revoked, expired, or the password "
        "changed). Reconnect to continue."
    )
    changed = connection_mark_needs_reconnect(
        connection_id=connection.pk, reason=error.reason, message=message, only_if_version=version
    )
    if not changed:
        # The version moved while we waited: another worker refreshed first and
        # our token was simply the old one. Not the user's problem.
        return RefreshResult(connection.pk, RefreshOutcome.CLAIMED_ELSEWHERE, "Lost a race; no change.")
    return RefreshResult(connection.pk, RefreshOutcome.NEEDS_RECONNECT, message)


def _refresh_failed(
    *, connection: JiraConnection, claim: uuid.UUID, now: datetime, error: atlassian.TransientError
) -> RefreshResult:
    failures = connection.failure_count + 1
    retry_at = now + _backoff(failures=failures, retry_after=error.retry_after)
    written = JiraConnection.objects.filter(pk=connection.pk, claim_id=claim).update(
        status=ConnectionStatus.REFRESH_FAILING,
        status_reason=error.reason[:64],
        status_message=error.message[:500],
        failure_count=failures,
        next_attempt_at=retry_at,
        updated_at=now,
    )
    if written != 1:
        # Our lease lapsed and another worker took over (and may have succeeded): its
        # state stands, and this stale failure is not the connection's.
        logger.warning("Refresh of connection %s failed after losing its claim (%s).", connection.pk, error.reason)
        return RefreshResult(connection.pk, RefreshOutcome.CLAIMED_ELSEWHERE, "Superseded while failing.")
    event_record(
        connection=connection,
        kind=EventKind.REFRESH_FAILED,
        message=error.message,
        detail={"reason": error.reason, "status": error.status, "failures": failures, "retry_at": retry_at.isoformat()},
    )
    logger.warning("Refresh of connection %s failed (%s); retry at %s", connection.pk, error.reason, retry_at)
    return RefreshResult(connection.pk, RefreshOutcome.TRANSIENT_FAILURE, error.message, retry_at)


# --- Access tokens for API calls --------------------------------------------------------


class ConnectionTokens:
    """Hands JiraClient a usable access token, refreshing through the single-flight path."""

    def __init__(self, *, connection_id: int) -> None:
        self.connection_id = connection_id

    def __repr__(self) -> str:
        return f"<ConnectionTokens connection_id={self.connection_id}>"

    def access_token(self) -> str:
        return connection_access_token(connection_id=self.connection_id)

    @sensitive_variables("rejected")
    def refreshed_access_token(self, *, rejected: str) -> str:
        return connection_access_token(connection_id=self.connection_id, rejected=rejected)


def _usable(connection: JiraConnection, *, now: datetime) -> bool:
    expires = connection.access_token_expires_at
    return connection.access_token is not None and expires is not None and expires > now + MIN_TOKEN_VALIDITY


def _rate_limited_until(connection: JiraConnection, *, now: datetime) -> datetime | None:
    """When Atlassian's Retry-After for this connection ends, if it has not yet."""
    until = connection.next_attempt_at
    limited = connection.status_reason == atlassian.RateLimitedError.reason
    return until if limited and until is not None and until > now else None


@sensitive_variables("rejected")
def connection_access_token(*, connection_id: int, rejected: str | None = None) -> str:
    """A valid access token for the connection; refreshes first when it expires within a
    minute (or when `rejected` is the stored one), waits for another worker's refresh."""
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
            connection_mark_needs_reconnect(
                connection_id=connection_id,
                reason="token_unreadable",
                message="The stored token could not be decrypted (encryption key removed or data damaged).",
            )
            continue
        stale = rejected is not None and connection.access_token == rejected
        if refreshed or (_usable(connection, now=now) and not stale):
            # A token this call just obtained is used even if Atlassian gave it a short
            # (or garbled, hence zero) lifetime: refreshing again would loop forever.
            return connection.access_token
        wait_until = _rate_limited_until(connection, now=now)
        if wait_until is not None:
            # A user may retry past an ordinary backoff (Atlassian may be back), but not
            # past a Retry-After: every page view would knock on the token endpoint again.
            raise ConnectionUnusableError(
                f"Atlassian asked us to slow down; try again after {wait_until:%H:%M:%S} UTC.", permanent=False
            )
        result = connection_refresh(
            connection_id=connection_id,
            now=now,
            due_within=MIN_TOKEN_VALIDITY,
            force=stale,
            ignore_backoff=True,
        )
        refreshed = result.outcome == RefreshOutcome.REFRESHED
        if result.outcome == RefreshOutcome.TRANSIENT_FAILURE:
            raise ConnectionUnusableError(f"Jira is not reachable right now: {result.message}", permanent=False)
        if result.outcome == RefreshOutcome.CLAIMED_ELSEWHERE:
            if clock.now() >= deadline:
                raise ConnectionUnusableError("Jira is busy refreshing this connection; try again.", permanent=False)
            # The refresh under way elsewhere will replace the token: read it then.
            clock.sleep(CLAIM_POLL_SECONDS)
        # Otherwise (refreshed, not due, needs reconnect, gone): read the row again.


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
        tokens = ConnectionTokens(connection_id=connection.pk)
        for site in connection.sites.all():
            if site.enabled:
                client = atlassian.JiraClient(cloud_id=site.cloud_id, site_url=site.url, tokens=tokens)
                yield SiteClient(connection=connection, site=site, client=client)
