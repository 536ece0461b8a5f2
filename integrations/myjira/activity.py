"""My Jira's live part: each site's recent activity from received Jira events, and which
issues changed since the user's previous visit.

Two queries whatever the number of sites (the newest events per site through a window
function, the changed issue keys), plus two for the visit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import quote

from django.db.models import F, Window
from django.db.models.functions import RowNumber

from accounts.models import User
from integrations.models import JiraEvent, JiraSite, MyJiraVisit

# Events shown per site, newest first.
ACTIVITY_SHOWN = 10

VERBS = {
    "jira:issue_created": "created",
    "jira:issue_updated": "updated",
    "jira:issue_deleted": "deleted",
    "comment_created": "commented on",
    "comment_updated": "edited a comment on",
    "comment_deleted": "deleted a comment on",
}


@dataclass(frozen=True)
class ActivityRow:
    verb: str
    issue_key: str
    issue_summary: str
    actor_name: str
    received_at: datetime
    browse_url: str
    # Received since the user's previous visit.
    new: bool


@dataclass(frozen=True)
class SiteActivity:
    rows: list[ActivityRow] = field(default_factory=list)
    changed_keys: frozenset[str] = frozenset()


def visit_record(*, user: User, now: datetime) -> datetime | None:
    """A new visit to My Jira: returns the previous one (None on the first)."""
    seen = MyJiraVisit.objects.filter(user=user).values_list("seen_at", flat=True).first()
    if seen is None:
        # One statement, like the update below (no savepoint): another tab may insert first.
        MyJiraVisit.objects.bulk_create([MyJiraVisit(user=user, seen_at=now)], ignore_conflicts=True)
        return None
    MyJiraVisit.objects.filter(user=user).update(previous_seen_at=F("seen_at"), seen_at=now)
    return seen


def visit_previous(*, user: User) -> datetime | None:
    """The visit the current one counts from, read only (the current visit's next pages)."""
    return MyJiraVisit.objects.filter(user=user).values_list("previous_seen_at", flat=True).first()


def sites_activity(*, sites: list[JiraSite], since: datetime | None) -> dict[int, SiteActivity]:
    """Per site: the newest ACTIVITY_SHOWN events, and the issue keys with an event after
    `since` (none when `since` is None: a first visit marks nothing)."""
    if not sites:
        return {}
    by_id = {site.pk: site for site in sites}
    rank = Window(RowNumber(), partition_by=[F("site_id")], order_by=[F("created_at").desc(), F("id").desc()])
    newest = (
        JiraEvent.objects.filter(site_id__in=by_id)
        .annotate(rank=rank)
        .filter(rank__lte=ACTIVITY_SHOWN)
        .order_by("site_id", "-created_at", "-id")
    )
    changed: dict[int, set[str]] = {}
    if since is not None:
        keys = (
            JiraEvent.objects.filter(site_id__in=by_id, created_at__gt=since)
            .exclude(issue_key="")
            .values_list("site_id", "issue_key")
            .distinct()
        )
        for site_id, key in keys:
            changed.setdefault(site_id, set()).add(key)
    rows: dict[int, list[ActivityRow]] = {}
    for event in newest:
        site = by_id[event.site_id]
        rows.setdefault(event.site_id, []).append(
            ActivityRow(
                verb=VERBS.get(event.event_type, event.event_type),
                issue_key=event.issue_key,
                issue_summary=event.issue_summary,
                actor_name=event.actor_name,
                received_at=event.created_at,
                browse_url=f"{site.url.rstrip('/')}/browse/{quote(event.issue_key)}" if event.issue_key else "",
                new=since is not None and event.created_at > since,
            )
        )
    return {
        site_id: SiteActivity(rows=rows.get(site_id, []), changed_keys=frozenset(changed.get(site_id, ())))
        for site_id in by_id
    }
