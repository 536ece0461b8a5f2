"""Dynamic webhooks as Jira keeps them: the registration rules and the event payloads.

Functions here are pure: `State` calls them with its lock held and keeps the records.
Shapes follow Atlassian's OpenAPI document (sandbox/openapi/) and shared/reference/
atlassian-oauth.md section 9.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sandbox import jql
from sandbox.seed import Issue, Site, User, jira_datetime

EVENTS = (
    "jira:issue_created",
    "jira:issue_updated",
    "jira:issue_deleted",
    "comment_created",
    "comment_updated",
    "comment_deleted",
    "issue_property_set",
    "issue_property_deleted",
)
ISSUE_UPDATED = "jira:issue_updated"
COMMENT_CREATED = "comment_created"
ONE_URL_PER_APP = "Only a single URL per app is allowed to be registered."


class RequestError(ValueError):
    """The request as a whole is refused: 400 with this message in `errorMessages`."""


@dataclass(frozen=True)
class WebhookSpec:
    """One entry of a registration request, checked for shape but not yet for Jira's rules."""

    events: tuple[str, ...]
    jql_filter: str
    field_ids: tuple[str, ...] | None
    property_keys: tuple[str, ...] | None


@dataclass
class Webhook:
    id: int
    client_id: str
    account_id: str
    site_id: str
    url: str
    spec: WebhookSpec
    filter: jql.WebhookFilter
    expires_at: float

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "jqlFilter": self.spec.jql_filter,
            "events": list(self.spec.events),
            # The schema's int64 (milliseconds), not the ISO string of the doc's example.
            "expirationDate": epoch_ms(self.expires_at),
            "url": self.url,
        }
        if self.spec.field_ids is not None:
            body["fieldIdsFilter"] = list(self.spec.field_ids)
        if self.spec.property_keys is not None:
            body["issuePropertyKeysFilter"] = list(self.spec.property_keys)
        return body

    def wants(self, event: str, changed_fields: tuple[str, ...]) -> bool:
        if event not in self.spec.events:
            return False
        # fieldIdsFilter narrows jira:issue_updated to changelogs touching those fields.
        if event == ISSUE_UPDATED and self.spec.field_ids is not None:
            return bool(set(self.spec.field_ids) & set(changed_fields))
        return True


def epoch_ms(seconds: float) -> int:
    return int(seconds * 1000)


def _string_list(value: Any, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RequestError(f"{name} must be a list of strings.")
    return tuple(value)


def parse_registration(body: dict[str, Any]) -> tuple[str, list[WebhookSpec]]:
    """The url and the webhooks of a POST /webhook body; RequestError when malformed."""
    url = body.get("url")
    if not isinstance(url, str) or not url.strip():
        raise RequestError("url must not be empty.")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RequestError("url must be an absolute http or https URL.")
    raw = body.get("webhooks")
    if not isinstance(raw, list):
        raise RequestError("webhooks must be a list.")
    specs = []
    for item in raw:
        if not isinstance(item, dict):
            raise RequestError("Each webhook must be an object.")
        jql_filter = item.get("jqlFilter")
        if not isinstance(jql_filter, str):
            raise RequestError("jqlFilter must be a string.")
        field_ids = item.get("fieldIdsFilter")
        property_keys = item.get("issuePropertyKeysFilter")
        specs.append(
            WebhookSpec(
                events=_string_list(item.get("events"), "events"),
                jql_filter=jql_filter,
                field_ids=None if field_ids is None else _string_list(field_ids, "fieldIdsFilter"),
                property_keys=None if property_keys is None else _string_list(property_keys, "issuePropertyKeysFilter"),
            )
        )
    return url, specs


def parse_ids(body: dict[str, Any]) -> list[int]:
    """`webhookIds` of a refresh or delete body; RequestError when missing or malformed."""
    ids = body.get("webhookIds")
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise RequestError("webhookIds must be a list of webhook IDs.")
    return ids


def spec_errors(spec: WebhookSpec) -> tuple[list[str], jql.WebhookFilter]:
    """Jira's per-webhook errors for events and jqlFilter (the limit is the caller's)."""
    errors: list[str] = []
    if not spec.events:
        errors.append("At least one event must be specified.")
    errors.extend(f"The event {e} is not supported." for e in spec.events if e not in EVENTS)
    jql_filter = jql.webhook_filter(spec.jql_filter)
    errors.extend(jql_filter.errors)
    return errors, jql_filter


def limit_error(limit: int) -> str:
    return f"The limit of {limit} webhooks per app, per user and per site has been reached."


# ---- payloads ---------------------------------------------------------------------------
def issue_json(site: Site, issue: Issue, users: dict[str, User], origin: str) -> dict[str, Any]:
    """The issue as webhook payloads carry it: every field, `self` on the site's REST v2 URL."""
    fields = dict(issue.fields)
    for role in ("assignee", "reporter"):
        person = fields.get(role)
        if person:
            fields[role] = users[person["accountId"]].jira_user_json(site, origin)
    return {"id": str(issue.id), "self": f"{site.url}/rest/api/2/issue/{issue.id}", "key": issue.key, "fields": fields}


def comment_json(site: Site, issue: Issue, comment: Comment, author: User, origin: str) -> dict[str, Any]:
    person = author.jira_user_json(site, origin)
    stamp = jira_datetime(comment.created)
    return {
        "self": f"{site.url}/rest/api/2/issue/{issue.id}/comment/{comment.id}",
        "id": str(comment.id),
        "author": person,
        "body": comment.body,
        "updateAuthor": person,
        "created": stamp,
        "updated": stamp,
        "jsdPublic": True,
    }


@dataclass(frozen=True)
class Comment:
    id: int
    issue_key: str
    author_id: str
    body: str
    created: float


@dataclass(frozen=True)
class ChangeItem:
    field: str
    from_value: str | None
    from_string: str | None
    to_value: str | None
    to_string: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "fieldtype": "jira",
            "fieldId": self.field,
            "from": self.from_value,
            "fromString": self.from_string,
            "to": self.to_value,
            "toString": self.to_string,
        }


@dataclass(frozen=True)
class IssueEvent:
    """Something that happened to an issue, before it is matched against webhooks."""

    event: str
    site_id: str
    issue_key: str
    actor_id: str
    at: float
    # jira:issue_updated: Jira's issue_event_type_name and the changelog.
    type_name: str = ""
    changelog_id: int | None = None
    items: tuple[ChangeItem, ...] = ()
    comment: Comment | None = None

    @property
    def changed_fields(self) -> tuple[str, ...]:
        return tuple(i.field for i in self.items)


def event_payload(
    event: IssueEvent, site: Site, issue: Issue, users: dict[str, User], origin: str, webhook_ids: list[int]
) -> dict[str, Any]:
    """Jira's webhook body for `event`, plus `matchedWebhookIds` as dynamic webhooks add it."""
    actor = users[event.actor_id]
    payload: dict[str, Any] = {"timestamp": epoch_ms(event.at), "webhookEvent": event.event}
    if event.type_name:
        payload["issue_event_type_name"] = event.type_name
    payload["user"] = actor.jira_user_json(site, origin)
    payload["issue"] = issue_json(site, issue, users, origin)
    if event.changelog_id is not None:
        payload["changelog"] = {"id": str(event.changelog_id), "items": [i.to_json() for i in event.items]}
    if event.comment is not None:
        payload["comment"] = comment_json(site, issue, event.comment, users[event.comment.author_id], origin)
    payload["matchedWebhookIds"] = webhook_ids
    return payload
