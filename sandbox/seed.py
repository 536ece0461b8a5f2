"""Deterministic seed data: three Atlassian accounts, three Jira sites and their issues.

Nothing here is random at import time in a way that varies between runs: the issue
generator uses string-seeded RNGs, which Python hashes with SHA-512, not PYTHONHASHSEED.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

API_BASE = "https://api.atlassian.com"


@dataclass(frozen=True)
class User:
    account_id: str
    name: str
    email: str
    nickname: str
    # The /avatars/<avatar>.svg image the sandbox draws for this user.
    avatar: str
    zoneinfo: str
    locale: str
    site_ids: tuple[str, ...]
    job_title: str = ""
    department: str = ""
    location: str = ""
    # Jira hides the address of users who chose so; /myself then carries no emailAddress.
    email_visible_in_jira: bool = True

    @property
    def initials(self) -> str:
        return "".join(word[0] for word in self.name.split()[:2]).upper()

    def picture(self, origin: str) -> str:
        """The avatar URL on the sandbox's own origin (it serves the image: see avatar_svg)."""
        return f"{origin}/avatars/{self.avatar}.svg"

    def me_json(self, origin: str) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "email": self.email,
            "name": self.name,
            "picture": self.picture(origin),
            "account_status": "active",
            "nickname": self.nickname,
            "zoneinfo": self.zoneinfo,
            "locale": self.locale,
            "extended_profile": {
                "job_title": self.job_title,
                "organization": "Example Org",
                "department": self.department,
                "location": self.location,
            },
        }

    def avatar_urls(self, origin: str) -> dict[str, str]:
        picture = self.picture(origin)
        return {size: f"{picture}?s={size.split('x')[0]}" for size in ("48x48", "24x24", "16x16", "32x32")}

    def jira_user_json(self, site: Site, origin: str) -> dict[str, Any]:
        user: dict[str, Any] = {
            "self": f"{API_BASE}/ex/jira/{site.cloud_id}/rest/api/3/user?accountId={self.account_id}",
            "accountId": self.account_id,
            "accountType": "atlassian",
        }
        # The OpenAPI User schema types emailAddress as a plain string: a hidden address
        # is left out rather than sent as null.
        if self.email_visible_in_jira:
            user["emailAddress"] = self.email
        user.update(
            avatarUrls=self.avatar_urls(origin),
            displayName=self.name,
            active=True,
            timeZone=self.zoneinfo,
            locale=self.locale.replace("-", "_"),
        )
        return user


@dataclass(frozen=True)
class Site:
    cloud_id: str
    name: str
    project_key: str
    project_name: str
    avatar_url: str

    @property
    def url(self) -> str:
        return f"https://{self.name}.atlassian.net"


@dataclass(frozen=True)
class Issue:
    id: int
    key: str
    site_id: str
    assignee_id: str | None
    status_name: str
    status_category: str
    priority_rank: int
    updated: float
    created: float
    fields: dict[str, Any] = field(hash=False, compare=False)


SITES: tuple[Site, ...] = (
    Site(
        cloud_id="6f4e1b2a-0c3d-4e5f-9a8b-1c2d3e4f5a01",
        name="acme",
        project_key="ACME",
        project_name="Acme Platform",
        avatar_url="https://site-admin-avatar-cdn.prod.public.atl-paas.net/avatars/240/rocket.png",
    ),
    Site(
        cloud_id="6f4e1b2a-0c3d-4e5f-9a8b-1c2d3e4f5a02",
        name="globex",
        project_key="GLX",
        project_name="Globex Support",
        avatar_url="https://site-admin-avatar-cdn.prod.public.atl-paas.net/avatars/240/koala.png",
    ),
    Site(
        cloud_id="6f4e1b2a-0c3d-4e5f-9a8b-1c2d3e4f5a03",
        name="initech",
        project_key="INIT",
        project_name="Initech TPS",
        avatar_url="https://site-admin-avatar-cdn.prod.public.atl-paas.net/avatars/240/lighthouse.png",
    ),
)
ACME, GLOBEX, INITECH = (s.cloud_id for s in SITES)

USERS: tuple[User, ...] = (
    User(
        account_id="557058:ada-0001",
        name="Ada Lovelace",
        email="ada@example.com",
        nickname="ada",
        avatar="ada",
        zoneinfo="Europe/London",
        locale="en-GB",
        site_ids=(ACME, GLOBEX, INITECH),
        job_title="Analyst",
        department="Engines",
        location="London",
    ),
    User(
        account_id="557058:grace-0002",
        name="Grace Hopper",
        email="grace@example.com",
        nickname="grace",
        avatar="grace",
        zoneinfo="America/New_York",
        locale="en-US",
        site_ids=(ACME,),
        job_title="Rear Admiral",
        department="Compilers",
        location="Arlington",
    ),
    User(
        account_id="557058:alan-0003",
        name="Alan Turing",
        email="alan@example.com",
        nickname="alan",
        avatar="alan",
        zoneinfo="Europe/London",
        locale="en-GB",
        site_ids=(ACME, GLOBEX),
        job_title="Mathematician",
        department="Hut 8",
        location="Bletchley",
        email_visible_in_jira=False,
    ),
)
ADA, GRACE, ALAN = (u.account_id for u in USERS)

ISSUES_PER_SITE = 45

# Classic 3LO scopes the sandbox app is "configured" with, and what the consent page says.
KNOWN_SCOPES: dict[str, str] = {
    "read:jira-work": "View Jira issue data",
    "write:jira-work": "Create and manage issues",
    "read:jira-user": "View user profiles",
    "manage:jira-project": "Manage project settings",
    "manage:jira-configuration": "Manage Jira global settings",
    "manage:jira-webhook": "Fetch, register, refresh and delete dynamic Jira webhooks",
    "read:me": "View your profile (name, email, avatar)",
    "read:account": "View user profiles",
    "offline_access": "Keep access after you leave (refresh tokens)",
}

# (name, id, statusCategory key, category id, colour, category name)
_STATUSES = {
    "To Do": ("10000", "new", 2, "blue-gray", "To Do"),
    "In Progress": ("3", "indeterminate", 4, "yellow", "In Progress"),
    "In Review": ("10001", "indeterminate", 4, "yellow", "In Progress"),
    "Done": ("10002", "done", 3, "green", "Done"),
}
STATUS_NAMES = tuple(_STATUSES)
_PRIORITIES = (("Highest", "1"), ("High", "2"), ("Medium", "3"), ("Low", "4"), ("Lowest", "5"))
_ISSUE_TYPES = (("Task", "10001"), ("Bug", "10004"), ("Story", "10002"))
_VERBS = ("Fix", "Investigate", "Document", "Refactor", "Speed up", "Review", "Design", "Test")
_THINGS = (
    "login redirect",
    "invoice export",
    "search filters",
    "nightly backup",
    "email digest",
    "API rate limiting",
    "dashboard widgets",
    "billing webhook",
    "onboarding checklist",
    "audit log",
)
_BASE_TIME = datetime(2026, 11, 20, 10, 15, 30, tzinfo=UTC)


def jira_datetime(ts: float) -> str:
    """Jira's format: milliseconds and a colon-less offset, e.g. 2026-11-20T10:15:30.000+0000."""
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def status_json(site: Site, name: str) -> dict[str, Any]:
    """An issue's `status` field for one of STATUS_NAMES."""
    status_id, cat_key, cat_id, colour, cat_name = _STATUSES[name]
    return {
        "self": f"{API_BASE}/ex/jira/{site.cloud_id}/rest/api/3/status/{status_id}",
        "description": "",
        "name": name,
        "id": status_id,
        "statusCategory": {
            "self": f"{API_BASE}/ex/jira/{site.cloud_id}/rest/api/3/statuscategory/{cat_id}",
            "id": cat_id,
            "key": cat_key,
            "colorName": colour,
            "name": cat_name,
        },
    }


def _status_for(n: int) -> str:
    if n % 6 == 0:
        return "Done"
    if n % 6 == 2:
        return "In Progress"
    if n % 6 == 4:
        return "In Review"
    return "To Do"


def _assignee_for(n: int, site: Site) -> str | None:
    # Three in five issues go to Ada so that she has more than 20 open issues on each site
    # (22 with this pattern), which forces paging at 20 per page.
    if n % 5 in (1, 2, 3):
        return ADA
    if n % 5 == 4:
        others = [u.account_id for u in USERS if u.account_id != ADA and site.cloud_id in u.site_ids]
        return others[(n // 5) % len(others)] if others else None
    return None


def build_issues() -> dict[str, list[Issue]]:
    users = {u.account_id: u for u in USERS}
    result: dict[str, list[Issue]] = {}
    for site_index, site in enumerate(SITES):
        rng = random.Random(f"sandbox-issues-{site.name}")
        project = {
            "self": f"{API_BASE}/ex/jira/{site.cloud_id}/rest/api/3/project/{10000 + site_index}",
            "id": str(10000 + site_index),
            "key": site.project_key,
            "name": site.project_name,
            "projectTypeKey": "software",
        }
        issues: list[Issue] = []
        # Distinct minute offsets keep `updated` unique, so ORDER BY updated is a total order.
        minutes = rng.sample(range(1, 60 * 24 * 60), ISSUES_PER_SITE)
        for n in range(1, ISSUES_PER_SITE + 1):
            issue_id = 10000 + site_index * 1000 + n
            key = f"{site.project_key}-{n}"
            status_name = _status_for(n)
            priority_name, priority_id = _PRIORITIES[rng.randrange(len(_PRIORITIES))]
            type_name, type_id = _ISSUE_TYPES[rng.randrange(len(_ISSUE_TYPES))]
            updated = (_BASE_TIME - timedelta(minutes=minutes[n - 1])).timestamp()
            created = updated - rng.randrange(1, 90) * 86_400 - rng.randrange(0, 86_400)
            assignee_id = _assignee_for(n, site)
            # Their avatar URLs are drawn again per answer, on the origin the client called.
            assignee = users[assignee_id].jira_user_json(site, API_BASE) if assignee_id else None
            reporter = users[ADA].jira_user_json(site, API_BASE)
            fields: dict[str, Any] = {
                "summary": f"{_VERBS[rng.randrange(len(_VERBS))]} {_THINGS[rng.randrange(len(_THINGS))]}",
                "status": status_json(site, status_name),
                "priority": {
                    "self": f"{API_BASE}/ex/jira/{site.cloud_id}/rest/api/3/priority/{priority_id}",
                    "name": priority_name,
                    "id": priority_id,
                },
                "issuetype": {"name": type_name, "id": type_id, "subtask": False},
                "project": project,
                "assignee": assignee,
                "reporter": reporter,
                "created": jira_datetime(created),
                "updated": jira_datetime(updated),
                "labels": [],
            }
            issues.append(
                Issue(
                    id=issue_id,
                    key=key,
                    site_id=site.cloud_id,
                    assignee_id=assignee_id,
                    status_name=status_name,
                    status_category=_STATUSES[status_name][1],
                    priority_rank=int(priority_id),
                    updated=updated,
                    created=created,
                    fields=fields,
                )
            )
        result[site.cloud_id] = issues
    return result
