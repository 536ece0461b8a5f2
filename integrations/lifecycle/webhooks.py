"""Jira dynamic webhooks: registered for every site of a connection granted
manage:jira-webhook, and kept alive for ever.

Atlassian's rules (../shared/reference/atlassian-oauth.md, "Dynamic webhooks"): at most 5
webhooks per app, user and site; each lives 30 days unless extended (PUT refresh, which
silently ignores ids Atlassian no longer knows); a registration answers HTTP 200 even
when some webhooks failed, with an id or errors per webhook, in request order; the
jqlFilter subset has no currentUser(), so a filter names the user's account id.

Each site gets one webhook per slot (issues the user is assignee of, issues they
reported). `site_webhooks_sync` does one site, under a claim:

1. claim: a conditional UPDATE of the site's webhooks_claimed_until (no live claim):
   exactly one row changed means this worker owns the site, so two runs never register
   the same webhooks twice;
2. list what Atlassian knows; a tracked id it no longer lists is registered again, an
   untracked webhook with our filter is adopted (a crash after a registration), any
   other untracked one is deleted (an old filter), freeing the limit;
3. register what is missing, inside the limit; per-webhook errors are recorded on the
   row and retried with backoff;
4. extend every webhook with less than EXTEND_WHEN_LEFT to live (an idle connection's
   site is only looked at from EXTEND_IDLE_WHEN_LEFT: the look costs it a refresh);
5. release the claim and set the next look: daily at the latest, sooner for a backoff.

Entry points: `webhooks_maintain` (the scheduled run), `connection_webhooks_sync`
(right after a connect), `connection_webhooks_delete` (disconnect, best effort).
Reads: `scopes_missing` here; a site's webhook health is read in integrations/webhook_health.py.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError
from django.db.models import F, Q
from django.urls import reverse

from integrations import atlassian, clock
from integrations.lifecycle.access import ConnectionTokens, ConnectionUnusableError
from integrations.lifecycle.config import ConfigurationError
from integrations.models import (
    ConnectionStatus,
    JiraConnection,
    JiraSite,
    JiraWebhook,
    WebhookSlot,
    WebhookStatus,
)
from jiraconnect.hosts import is_loopback

logger = logging.getLogger(__name__)

WEBHOOK_SCOPE = "manage:jira-webhook"
# What My Jira shows: issues created, changed or deleted, and comments on them.
EVENTS = (
    "jira:issue_created",
    "jira:issue_updated",
    "jira:issue_deleted",
    "comment_created",
    "comment_updated",
)
MAX_PER_SITE = 5
LIFETIME = timedelta(days=30)
# A connection in use has a valid access token anyway: its webhooks are extended with two
# thirds of their 30 days left, ten daily chances before one expires.
EXTEND_WHEN_LEFT = timedelta(days=20)
# An idle connection's access token has long expired, so extending buys it a refresh (which
# also serves as its keep-alive, lifecycle.due). Waiting until 12 days are left makes that
# one refresh every 18 days instead of every 10, still with twelve days of retries.
EXTEND_IDLE_WHEN_LEFT = timedelta(days=12)
# Listed this often while the connection's access token is valid anyway (it is in use):
# a webhook Atlassian dropped is noticed within a day. Idle connections are listed at
# each extension, so the check never costs them a token refresh of its own.
VERIFY_EVERY = timedelta(days=1)
CLAIM_LEASE = timedelta(minutes=2)
BACKOFF_BASE = timedelta(minutes=5)
BACKOFF_CAP = timedelta(hours=6)
# Sites looked at per scheduled run; the rest wait for the next run, oldest first.
RUN_BATCH = 500

# Atlassian account ids: "557058:0f2c…", "5b10ac8d82e05b22cc7d4ef5", "qm:…". Anything else
# would have to be escaped into the jqlFilter: refuse it instead.
_ACCOUNT_ID = re.compile(r"[A-Za-z0-9:_-]{1,128}")
_CALL_ERRORS = (atlassian.AtlassianError, ConnectionUnusableError)
_ROW_FIELDS = (
    "webhook_id",
    "events",
    "jql_filter",
    "status",
    "registered_at",
    "expires_at",
    "last_extended_at",
    "last_error",
    "last_error_at",
    "failure_count",
    "next_attempt_at",
    "updated_at",
)


# --- Settings and rules ---------------------------------------------------------------


def webhooks_enabled() -> bool:
    return bool(settings.ATLASSIAN_WEBHOOKS)


def webhooks_requested() -> bool:
    """Webhooks are on and the portal asks for their scope: what users may be promised
    (a reconnect then brings live updates)."""
    return webhooks_enabled() and WEBHOOK_SCOPE in settings.ATLASSIAN_SCOPES


def has_webhook_scope(connection: JiraConnection) -> bool:
    return WEBHOOK_SCOPE in (connection.scopes or [])


# Not compared: a stored refresh token is the proof of offline_access, whether or not
# Atlassian lists it among the granted scopes.
_UNLISTED_SCOPES = frozenset({"offline_access"})


def scopes_missing(connection: JiraConnection) -> list[str]:
    """Configured scopes (ATLASSIAN_SCOPES) this connection was not granted: it keeps what
    it has, and its user is asked to reconnect for the rest."""
    granted = set(connection.scopes or [])
    return [scope for scope in settings.ATLASSIAN_SCOPES if scope not in granted and scope not in _UNLISTED_SCOPES]


def callback_url() -> str:
    """Where Jira delivers: ATLASSIAN_WEBHOOK_URL, else SITE_URL + the receiver's path.
    Never from a request's Host header; https, or plain http to a loopback host."""
    url: str = settings.ATLASSIAN_WEBHOOK_URL or f"{settings.SITE_URL}{reverse('jira-webhook')}"
    parts = urlsplit(url)
    if (parts.scheme == "https" and parts.hostname) or (parts.scheme == "http" and is_loopback(parts.hostname)):
        return url
    raise ConfigurationError(
        "Jira webhooks need an https callback URL: set SITE_URL (or ATLASSIAN_WEBHOOK_URL) to the portal's "
        "public https address, or ATLASSIAN_WEBHOOKS=false."
    )


def webhook_specs(*, account_id: str) -> dict[str, atlassian.WebhookSpec]:
    """One webhook per slot. Raises ValueError for an account id a filter cannot hold."""
    if not _ACCOUNT_ID.fullmatch(account_id):
        raise ValueError("This Atlassian account id cannot be used in a webhook filter.")
    return {
        WebhookSlot.ASSIGNEE: atlassian.WebhookSpec(events=EVENTS, jql_filter=f'assignee = "{account_id}"'),
        WebhookSlot.REPORTER: atlassian.WebhookSpec(events=EVENTS, jql_filter=f'reporter = "{account_id}"'),
    }


def backoff(failures: int) -> timedelta:
    doublings: int = max(0, min(failures - 1, 16))
    return min(BACKOFF_CAP, BACKOFF_BASE * (1 << doublings))


# --- Counting -------------------------------------------------------------------------


@dataclass
class WebhookCounts:
    sites: int = 0
    registered: int = 0
    extended: int = 0
    reregistered: int = 0
    adopted: int = 0
    deleted: int = 0
    failed: int = 0
    claimed_elsewhere: int = 0
    errors: int = 0

    def add(self, other: WebhookCounts) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- One site -------------------------------------------------------------------------


def _lease_free(*, now: datetime) -> Q:
    return Q(webhooks_claimed_until__isnull=True) | Q(webhooks_claimed_until__lt=now)


def _claim(*, site_id: int, claim: uuid.UUID) -> bool:
    now = clock.now()
    rows = JiraSite.objects.filter(_lease_free(now=now), pk=site_id)
    return rows.update(webhooks_claim_id=claim, webhooks_claimed_until=now + CLAIM_LEASE) == 1


def site_webhooks_sync(*, site_id: int) -> WebhookCounts:
    """Bring one site's webhooks in line with what the connection needs (module docstring).
    Raises ConfigurationError (no usable callback URL, or our client credentials refused)."""
    counts = WebhookCounts()
    claim = uuid.uuid4()
    if not _claim(site_id=site_id, claim=claim):
        counts.claimed_elsewhere = 1
        return counts
    # Should anything unexpected fail, the site is looked at again after a short pause.
    next_check: datetime | None = clock.now() + BACKOFF_BASE
    try:
        next_check = _sync(site_id=site_id, counts=counts)
    finally:
        JiraSite.objects.filter(pk=site_id, webhooks_claim_id=claim).update(
            webhooks_claim_id=None, webhooks_claimed_until=None, webhooks_next_check_at=next_check
        )
    return counts


def _sync(*, site_id: int, counts: WebhookCounts) -> datetime:
    now = clock.now()
    site = (
        JiraSite.objects.select_related("connection")
        .defer("connection__access_token", "connection__refresh_token")
        .filter(pk=site_id)
        .first()
    )
    if site is None:
        return now + VERIFY_EVERY
    connection = site.connection
    if not webhooks_enabled() or connection.needs_reconnect or not has_webhook_scope(connection):
        # Nothing to do until the connection changes (a reconnect looks again at once).
        return now + VERIFY_EVERY
    counts.sites = 1
    url = callback_url()
    try:
        specs = webhook_specs(account_id=connection.account_id)
    except ValueError as exc:
        rows = _rows(site=site, specs={})
        return _fail_all(rows, message=str(exc), counts=counts, now=now)
    rows = _rows(site=site, specs=specs)
    client = atlassian.JiraClient(
        cloud_id=site.cloud_id, site_url=site.url, tokens=ConnectionTokens(connection_id=connection.pk, upkeep=True)
    )
    token_valid = connection.access_token_expires_at is not None and connection.access_token_expires_at > now
    if not token_valid and not _work_due(rows, now=now, extend_when_left=EXTEND_IDLE_WHEN_LEFT):
        # The daily check rides only on a token that is still valid (a connection in use):
        # it never buys an idle connection a refresh. Idle ones are checked when their
        # webhooks next need extending, every 18 days.
        return _next_check(rows, now=now, extend_when_left=EXTEND_IDLE_WHEN_LEFT)
    try:
        listed = client.list_webhooks()
    except _CALL_ERRORS as exc:
        return _fail_all(rows, message=_message(exc), counts=counts, now=now)

    by_id = {webhook.id: webhook for webhook in listed}
    used = _reconcile(rows, by_id=by_id, specs=specs, counts=counts)
    deleted = _delete_orphans(client, site=site, listed=listed, used=used, specs=specs, counts=counts)
    _register(client, rows, url=url, specs=specs, in_use=len(listed) - deleted, counts=counts, now=now)
    _extend(client, rows, counts=counts, now=now)
    for row in rows:
        row.save(update_fields=_ROW_FIELDS)
    return _next_check(rows, now=now)


def _work_due(rows: list[JiraWebhook], *, now: datetime, extend_when_left: timedelta) -> bool:
    """Anything to register, or to extend with under `extend_when_left` left, now (not
    merely the daily check)."""
    for row in rows:
        if row.status == WebhookStatus.FAILING and row.next_attempt_at is not None and row.next_attempt_at > now:
            continue
        if row.webhook_id is None or row.expires_at is None or row.expires_at - now < extend_when_left:
            return True
    return False


def _rows(*, site: JiraSite, specs: dict[str, atlassian.WebhookSpec]) -> list[JiraWebhook]:
    """The site's rows, one per slot, made when missing; a slot whose filter changed drops
    its id (registered again; the old webhook is then deleted as an orphan)."""
    rows = {row.slot: row for row in JiraWebhook.objects.filter(site=site)}
    for slot, spec in specs.items():
        row = rows.get(slot)
        if row is None:
            try:
                rows[slot] = JiraWebhook.objects.create(
                    connection_id=site.connection_id,
                    site=site,
                    slot=slot,
                    events=list(spec.events),
                    jql_filter=spec.jql_filter,
                )
            except IntegrityError:  # the claim makes this unreachable; the constraint is the backstop
                rows[slot] = JiraWebhook.objects.get(site=site, slot=slot)
        elif row.jql_filter != spec.jql_filter or row.events != list(spec.events):
            row.jql_filter, row.events = spec.jql_filter, list(spec.events)
            row.webhook_id, row.status, row.expires_at = None, WebhookStatus.PENDING, None
    return list(rows.values())


def _matches(webhook: atlassian.RegisteredWebhook, spec: atlassian.WebhookSpec) -> bool:
    return webhook.jql_filter.strip() == spec.jql_filter and set(spec.events) <= set(webhook.events)


def _reconcile(
    rows: list[JiraWebhook],
    *,
    by_id: dict[int, atlassian.RegisteredWebhook],
    specs: dict[str, atlassian.WebhookSpec],
    counts: WebhookCounts,
) -> set[int]:
    """Match rows with what Atlassian lists; returns the listed ids the rows now hold."""
    used: set[int] = set()
    for row in rows:
        if row.webhook_id is None:
            continue
        listed = by_id.get(row.webhook_id)
        if listed is not None:
            used.add(row.webhook_id)
            row.expires_at = listed.expires_at or row.expires_at
            continue
        # Atlassian no longer knows it: it expired, or someone deleted it.
        logger.info("Jira webhook %s of site %s is gone at Atlassian; registering again", row.webhook_id, row.site_id)
        counts.reregistered += 1
        row.webhook_id, row.status, row.expires_at = None, WebhookStatus.PENDING, None
    for row in rows:
        spec = specs.get(row.slot)
        if row.webhook_id is not None or spec is None:
            continue
        # Ours, but untracked: a registration whose answer was lost (a crash, a timeout).
        match = next((w for w in by_id.values() if w.id not in used and _matches(w, spec)), None)
        if match is not None:
            used.add(match.id)
            counts.adopted += 1
            _succeeded(row, webhook_id=match.id, expires_at=match.expires_at)
    return used


def _delete_orphans(
    client: atlassian.JiraClient,
    *,
    site: JiraSite,
    listed: list[atlassian.RegisteredWebhook],
    used: set[int],
    specs: dict[str, atlassian.WebhookSpec],
    counts: WebhookCounts,
) -> int:
    """Delete this app's webhooks for this user and site that no row holds and no current
    filter matches (an old filter, a leftover of a deleted connection): they only use up
    the 5. Ids another connection of the same Atlassian account tracks stay."""
    shared = set(
        JiraWebhook.objects.filter(
            site__cloud_id=site.cloud_id,
            connection__account_id=site.connection.account_id,
            webhook_id__isnull=False,
        )
        .exclude(site=site)
        .values_list("webhook_id", flat=True)
    )
    orphans = [
        w.id
        for w in listed
        if w.id not in used and w.id not in shared and not any(_matches(w, s) for s in specs.values())
    ]
    if not orphans:
        return 0
    try:
        client.delete_webhooks(orphans)
    except _CALL_ERRORS as exc:
        logger.warning("Could not delete %d stale Jira webhook(s) of site %s: %s", len(orphans), site.pk, _message(exc))
        return 0
    counts.deleted += len(orphans)
    return len(orphans)


def _register(
    client: atlassian.JiraClient,
    rows: list[JiraWebhook],
    *,
    url: str,
    specs: dict[str, atlassian.WebhookSpec],
    in_use: int,
    counts: WebhookCounts,
    now: datetime,
) -> None:
    missing = [
        row
        for row in rows
        if row.webhook_id is None and row.slot in specs and (row.next_attempt_at is None or row.next_attempt_at <= now)
    ]
    room = max(0, MAX_PER_SITE - in_use)
    for row in missing[room:]:
        _failed(
            row,
            message=f"Jira allows {MAX_PER_SITE} webhooks per app, user and site, and {in_use} are in use.",
            now=now,
        )
        counts.failed += 1
    wanted = missing[:room]
    if not wanted:
        return
    try:
        results = client.register_webhooks(url=url, webhooks=[specs[row.slot] for row in wanted])
    except _CALL_ERRORS as exc:
        counts.failed += len(wanted)
        for row in wanted:
            _failed(row, message=_message(exc), now=now)
        return
    for row, result in zip(wanted, results, strict=True):
        if result.webhook_id is not None:
            counts.registered += 1
            row.registered_at = now
            _succeeded(row, webhook_id=result.webhook_id, expires_at=now + LIFETIME)
        else:
            counts.failed += 1
            _failed(row, message="Jira refused the webhook: " + "; ".join(result.errors), now=now)


def _extend(client: atlassian.JiraClient, rows: list[JiraWebhook], *, counts: WebhookCounts, now: datetime) -> None:
    due = [
        row
        for row in rows
        if row.webhook_id is not None
        and (row.expires_at is None or row.expires_at - now < EXTEND_WHEN_LEFT)
        and (row.status != WebhookStatus.FAILING or row.next_attempt_at is None or row.next_attempt_at <= now)
    ]
    if not due:
        return
    try:
        expires_at = client.refresh_webhooks([row.webhook_id for row in due if row.webhook_id is not None])
    except _CALL_ERRORS as exc:
        counts.failed += len(due)
        for row in due:
            _failed(row, message=f"Could not extend: {_message(exc)}", now=now)
        return
    counts.extended += len(due)
    for row in due:
        row.last_extended_at = now
        _succeeded(row, webhook_id=row.webhook_id, expires_at=expires_at)


def _succeeded(row: JiraWebhook, *, webhook_id: int | None, expires_at: datetime | None) -> None:
    row.webhook_id = webhook_id
    row.expires_at = expires_at
    row.status = WebhookStatus.ACTIVE
    row.failure_count = 0
    row.next_attempt_at = None


def _failed(row: JiraWebhook, *, message: str, now: datetime) -> None:
    row.status = WebhookStatus.FAILING
    row.failure_count += 1
    row.next_attempt_at = now + backoff(row.failure_count)
    row.last_error = message[:500]
    row.last_error_at = now


def _fail_all(rows: list[JiraWebhook], *, message: str, counts: WebhookCounts, now: datetime) -> datetime:
    for row in rows:
        _failed(row, message=message, now=now)
        row.save(update_fields=_ROW_FIELDS)
    counts.failed += len(rows)
    return _next_check(rows, now=now)


def _next_check(rows: list[JiraWebhook], *, now: datetime, extend_when_left: timedelta = EXTEND_WHEN_LEFT) -> datetime:
    times = [now + VERIFY_EVERY]
    for row in rows:
        if row.status == WebhookStatus.FAILING and row.next_attempt_at is not None:
            times.append(row.next_attempt_at)
        elif row.webhook_id is not None and row.expires_at is not None:
            times.append(row.expires_at - extend_when_left)
    return max(now, min(times))


def _message(exc: Exception) -> str:
    if isinstance(exc, atlassian.ScopeMismatchError):
        return f"This connection lacks {WEBHOOK_SCOPE}: reconnect it to get live updates."
    if isinstance(exc, ConnectionUnusableError | atlassian.AtlassianError):
        return exc.message
    return type(exc).__name__


# --- Entry points ---------------------------------------------------------------------


def webhooks_maintain(*, now: datetime, batch: int = RUN_BATCH) -> WebhookCounts:
    """The scheduled run's part: every site whose next look has come (new sites first).
    Stops at a ConfigurationError (logged: it concerns every site alike)."""
    counts = WebhookCounts()
    if not webhooks_enabled():
        return counts
    site_ids = list(
        JiraSite.objects.filter(Q(webhooks_next_check_at__isnull=True) | Q(webhooks_next_check_at__lte=now))
        .filter(_lease_free(now=now))
        .exclude(connection__status=ConnectionStatus.NEEDS_RECONNECT)
        .order_by(F("webhooks_next_check_at").asc(nulls_first=True), "pk")
        .values_list("pk", flat=True)[:batch]
    )
    for site_id in site_ids:
        try:
            counts.add(site_webhooks_sync(site_id=site_id))
        except ConfigurationError as exc:
            logger.error("Jira webhooks not maintained: %s", exc)
            counts.errors += 1
            break
        except Exception:
            logger.exception("Maintaining the Jira webhooks of site %s failed unexpectedly.", site_id)
            counts.errors += 1
    return counts


def connection_webhooks_sync(*, connection_id: int) -> WebhookCounts:
    """Right after a connect or reconnect: register at once, so live updates start now.
    Best effort: whatever fails is recorded on the rows (or logged) and the scheduled run
    tries again; the connect itself never fails because of webhooks."""
    counts = WebhookCounts()
    # A reconnect may have brought the scope: every site is looked at again now.
    JiraSite.objects.filter(connection_id=connection_id).update(webhooks_next_check_at=None)
    connection = JiraConnection.objects.defer("access_token", "refresh_token").filter(pk=connection_id).first()
    if connection is None or not webhooks_enabled() or not has_webhook_scope(connection):
        return counts
    for site_id in JiraSite.objects.filter(connection_id=connection_id).order_by("pk").values_list("pk", flat=True):
        try:
            counts.add(site_webhooks_sync(site_id=site_id))
        except Exception:
            logger.exception("Registering the Jira webhooks of site %s failed; the scheduled run retries.", site_id)
            counts.errors += 1
    return counts


def connection_webhooks_delete(*, connection: JiraConnection) -> int:
    """Delete the connection's webhooks at Atlassian before it goes (disconnect). Best
    effort: any failure is logged and the disconnect goes on; a webhook left behind
    expires within 30 days and its deliveries match no row. Returns how many went."""
    if connection.needs_reconnect:
        return 0
    deleted = 0
    rows = JiraWebhook.objects.filter(connection_id=connection.pk, webhook_id__isnull=False).select_related("site")
    by_site: dict[int, tuple[JiraSite, list[int]]] = {}
    for row in rows:
        assert row.webhook_id is not None
        by_site.setdefault(row.site_id, (row.site, []))[1].append(row.webhook_id)
    tokens = ConnectionTokens(connection_id=connection.pk, upkeep=True)
    for site, ids in by_site.values():
        shared = set(
            JiraWebhook.objects.filter(site__cloud_id=site.cloud_id, webhook_id__in=ids)
            .exclude(connection_id=connection.pk)
            .values_list("webhook_id", flat=True)
        )
        mine = [webhook_id for webhook_id in ids if webhook_id not in shared]
        if not mine:
            continue
        client = atlassian.JiraClient(cloud_id=site.cloud_id, site_url=site.url, tokens=tokens)
        try:
            client.delete_webhooks(mine)
        except Exception as exc:
            logger.warning(
                "Disconnect: could not delete %d Jira webhook(s) of site %s (%s); they expire by themselves.",
                len(mine),
                site.pk,
                getattr(exc, "reason", type(exc).__name__),
            )
            continue
        deleted += len(mine)
    return deleted
