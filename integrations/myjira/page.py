"""The My Jira page's content: the user's open assigned issues, fetched from every
enabled site in parallel.

The page costs the same number of queries whatever the number of connections: one
query loads every connection of the user with its access token, one more its sites.
Workers then use that still-valid token without touching the database; only an
expired or rejected token sends a worker down the access path (lifecycle.access).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlencode

from django.conf import settings
from django.core.cache import cache
from django.db import connections as db_connections
from django.db.models import Prefetch
from django.urls import reverse

from accounts.models import User
from integrations import atlassian, clock
from integrations.lifecycle.access import ConnectionTokens, ConnectionUnusableError
from integrations.lifecycle.config import ConfigurationError
from integrations.lifecycle.webhooks import has_webhook_scope, webhooks_enabled, webhooks_requested
from integrations.models import JiraConnection, JiraSite
from integrations.myjira.activity import SiteActivity, sites_activity, visit_previous, visit_record

logger = logging.getLogger(__name__)

JQL = "assignee = currentUser() AND statusCategory != Done ORDER BY updated DESC"
FIELDS = ["summary", "status", "priority", "updated"]
PAGE_SIZE = 20
# Sites fetched at once, per process: a user's sites in one round trip, without
# letting page views open sockets without bound.
POOL_SIZE = 16
# A page view cannot wait minutes for Retry-After: longer waits become a message.
INTERACTIVE_MAX_WAIT = 2.0
# Jira's nextPageToken is opaque; anything longer than this did not come from Jira.
MAX_PAGE_TOKEN = 4096
STATUS_CATEGORIES = frozenset({"new", "indeterminate", "done"})

MSG_TRANSIENT = "Jira did not answer, try again."
MSG_SCOPE = "This connection is missing a permission this page needs: reconnect to grant access."
MSG_UNAUTHORIZED = "Atlassian no longer accepts this connection: reconnect to continue."
MSG_CONFIGURATION = "This portal cannot renew Jira access right now; the operator has been told."
MSG_UNEXPECTED = "Something went wrong loading this site."


class SiteNotFound(Exception):
    """The requested site is not one of the user's shown sites."""


@dataclass(frozen=True)
class IssueRow:
    key: str
    summary: str
    status: str
    status_category: str
    priority: str
    updated: datetime | None
    browse_url: str
    # An event for this issue arrived since the user's previous visit.
    changed: bool = False


@dataclass(frozen=True)
class SiteIssues:
    site: JiraSite
    issues: list[IssueRow] = field(default_factory=list)
    more_url: str = ""
    error: str = ""
    reconnect: bool = False
    # Beyond the per-page cap (MY_JIRA_MAX_SITES): not fetched, one link away.
    deferred_url: str = ""
    activity: SiteActivity = field(default_factory=SiteActivity)
    # Whether this site can receive live updates: webhooks on and the scope granted.
    live: bool = False


@dataclass(frozen=True)
class ConnectionIssues:
    connection: JiraConnection
    sites: list[SiteIssues]
    hidden_sites: int


@dataclass(frozen=True)
class MyJiraPage:
    connections: list[ConnectionIssues]
    hidden_sites: int
    # Set when the page shows one site's further page (?site=…&page=…).
    single_site: JiraSite | None = None
    # The previous visit, which "changed since your last visit" counts from.
    since: datetime | None = None
    # Webhooks on and their scope requested: otherwise there is no live activity to promise.
    webhooks: bool = False


def page_token_valid(token: str) -> bool:
    return 0 < len(token) <= MAX_PAGE_TOKEN and token.isprintable()


def _interactive_sleep(seconds: float) -> None:
    if seconds > INTERACTIVE_MAX_WAIT:
        raise atlassian.RateLimitedError("Jira asked us to slow down.", retry_after=seconds)
    clock.sleep(seconds)


def _parse_updated(value: str) -> datetime | None:
    # Jira sends "2024-01-15T10:30:00.000+0000".
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return datetime.strptime(value, fmt)
        except ValueError:
            continue
    return None


def _row(issue: atlassian.JiraIssue) -> IssueRow:
    return IssueRow(
        key=issue.key,
        summary=issue.summary,
        status=issue.status,
        # Used as a CSS class: only Jira's three category keys get through.
        status_category=issue.status_category if issue.status_category in STATUS_CATEGORIES else "",
        priority=issue.priority,
        updated=_parse_updated(issue.updated),
        browse_url=issue.browse_url,
    )


def _error(exc: Exception) -> tuple[str, bool]:
    """(message, reconnect?) for a site that failed."""
    if isinstance(exc, atlassian.TransientError):
        return MSG_TRANSIENT, False
    if isinstance(exc, atlassian.ScopeMismatchError):
        return MSG_SCOPE, True
    if isinstance(exc, atlassian.UnauthorizedError):
        return MSG_UNAUTHORIZED, True
    if isinstance(exc, ConnectionUnusableError):
        return (exc.message, True) if exc.permanent else (MSG_TRANSIENT, False)
    if isinstance(exc, ConfigurationError):
        return MSG_CONFIGURATION, False
    if isinstance(exc, atlassian.AtlassianError):
        return exc.message, exc.permanent
    return MSG_UNEXPECTED, False


@dataclass(frozen=True)
class _Task:
    site: JiraSite
    client: atlassian.JiraClient
    page_token: str | None


def _fetch(task: _Task) -> SiteIssues:
    try:
        page = task.client.search_jql(jql=JQL, fields=FIELDS, max_results=PAGE_SIZE, next_page_token=task.page_token)
    except Exception as exc:
        message, reconnect = _error(exc)
        if message == MSG_UNEXPECTED or isinstance(exc, ConfigurationError):
            logger.exception("My Jira: site %s failed", task.site.pk)
        else:
            logger.warning("My Jira: site %s failed (%s)", task.site.pk, getattr(exc, "reason", type(exc).__name__))
        return SiteIssues(site=task.site, error=message, reconnect=reconnect)
    finally:
        # Runs in a pool thread: a token renewal opens that thread's own DB connection,
        # which nothing else would ever close.
        db_connections.close_all()
    more_url = ""
    if not page.is_last and page.next_page_token and page_token_valid(page.next_page_token):
        query = urlencode({"site": task.site.pk, "page": page.next_page_token})
        more_url = f"{reverse('my-jira')}?{query}"
    return SiteIssues(site=task.site, issues=[_row(i) for i in page.issues], more_url=more_url)


@functools.cache
def _pool() -> ThreadPoolExecutor:
    # One pool per process, kept between page views: its threads keep their pooled
    # requests Sessions, so each view reuses warm TLS connections to Atlassian.
    return ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="my-jira")


def _cache_key(*, user_id: int, site_id: int | None, page_token: str | None) -> str:
    token = hashlib.sha256((page_token or "").encode()).hexdigest()[:32]
    return f"myjira:v2:{user_id}:{site_id or 'all'}:{token}"


def issues_cache_forget(*, user_id: int, site_id: int) -> None:
    """Drop the cached first pages that show `site_id` (the main page and the site's own),
    so the next load fetches its issues again. Later pages of the site keep theirs for
    MY_JIRA_CACHE_SECONDS: their keys name page tokens nobody kept."""
    cache.delete_many(
        [
            _cache_key(user_id=user_id, site_id=None, page_token=None),
            _cache_key(user_id=user_id, site_id=site_id, page_token=None),
        ]
    )


def _fetch_all(tasks: list[_Task], *, key: str) -> list[SiteIssues]:
    """Each site's result, reused from the short-lived cache on a reload.

    One cache entry per page view (one read, at most one write, whatever the number of
    sites: the cache may be a database table). Only issues are cached, never a connection
    or a token: the cache may be shared by every host."""
    if not tasks:
        return []
    ttl = settings.MY_JIRA_CACHE_SECONDS
    cached: dict[int, tuple[list[IssueRow], str]] = (cache.get(key) or {}) if ttl else {}
    results = [
        SiteIssues(site=task.site, issues=cached[task.site.pk][0], more_url=cached[task.site.pk][1])
        for task in tasks
        if task.site.pk in cached
    ]
    missing = [task for task in tasks if task.site.pk not in cached]
    fetched = list(_pool().map(_fetch, missing)) if missing else []
    fresh = {r.site.pk: (r.issues, r.more_url) for r in fetched if not r.error}
    if ttl and fresh:
        cache.set(key, {**cached, **fresh}, timeout=ttl)
    return results + fetched


def _connections(*, user: User) -> list[JiraConnection]:
    # The access token is read here, once for all connections; the refresh token is
    # never needed on this page.
    return list(
        JiraConnection.objects.filter(user=user)
        .defer("refresh_token")
        .prefetch_related(Prefetch("sites", queryset=JiraSite.objects.order_by("name", "url")))
        .order_by("created_at", "pk")
    )


def my_jira_page(*, user: User, site_id: int | None = None, page_token: str | None = None) -> MyJiraPage:
    """Every connection of `user` with its enabled sites' issues; with `site_id`, only
    that site (its page after `page_token`). Raises SiteNotFound for a site that is
    not the user's or is hidden."""
    connections = _connections(user=user)
    single_site: JiraSite | None = None
    if site_id is not None:
        found = [(c, s) for c in connections for s in c.sites.all() if s.pk == site_id and s.enabled]
        if not found:
            raise SiteNotFound(site_id)
        connection, single_site = found[0]
        connections = [connection]

    tasks: list[_Task] = []
    deferred: list[SiteIssues] = []
    for connection in connections:
        if connection.needs_reconnect:
            continue
        tokens = ConnectionTokens.preloaded(connection)
        fetched_before = len(tasks)
        for site in connection.sites.all():
            if (single_site is not None and site.pk != single_site.pk) or not site.enabled:
                continue
            if len(tasks) >= settings.MY_JIRA_MAX_SITES:
                # One page view fetches a bounded number of sites; the rest wait for a click.
                deferred.append(SiteIssues(site=site, deferred_url=f"{reverse('my-jira')}?site={site.pk}"))
                continue
            client = atlassian.JiraClient(
                cloud_id=site.cloud_id, site_url=site.url, tokens=tokens, sleep=_interactive_sleep
            )
            tasks.append(_Task(site=site, client=client, page_token=page_token if single_site else None))
        if len(tasks) > fetched_before:
            # Here, not in the pool's threads: the write stays on the request's connection.
            tokens.record_use()
    key = _cache_key(user_id=user.pk, site_id=site_id, page_token=page_token)
    results = {result.site.pk: result for result in [*_fetch_all(tasks, key=key), *deferred]}
    # The main page is a new visit; its next pages count from the same previous visit.
    since = visit_record(user=user, now=clock.now()) if single_site is None else visit_previous(user=user)
    results = _with_activity(results, since=since)

    panels = []
    for connection in connections:
        sites = list(connection.sites.all())
        shown = [results[s.pk] for s in sites if s.pk in results]
        panels.append(
            ConnectionIssues(
                connection=connection,
                sites=shown,
                hidden_sites=0 if single_site else sum(1 for s in sites if not s.enabled),
            )
        )
    return MyJiraPage(
        connections=panels,
        hidden_sites=sum(p.hidden_sites for p in panels),
        single_site=single_site,
        since=since,
        webhooks=webhooks_requested(),
    )


def _with_activity(results: dict[int, SiteIssues], *, since: datetime | None) -> dict[int, SiteIssues]:
    """Each site's recent activity, and its issues marked when they changed since `since`."""
    activity = sites_activity(sites=[result.site for result in results.values()], since=since)
    live_on = webhooks_enabled()
    marked = {}
    for site_id, result in results.items():
        site_activity = activity.get(site_id, SiteActivity())
        issues = [dataclasses.replace(i, changed=i.key in site_activity.changed_keys) for i in result.issues]
        marked[site_id] = dataclasses.replace(
            result,
            issues=issues,
            activity=site_activity,
            live=live_on and has_webhook_scope(result.site.connection),
        )
    return marked
