"""Helpers for the webhook tests: Atlassian's webhook endpoints at their exact URLs (a
stateful fake for the long-running tests), signed deliveries, connections with the scope."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import responses
from django.conf import settings
from django.test import Client
from requests import PreparedRequest

from accounts.models import User
from integrations.lifecycle.webhooks import EVENTS
from integrations.models import JiraConnection, JiraSite, JiraWebhook, WebhookSlot, WebhookStatus
from tests.support.atlassian import API

WEBHOOK_PATH = "/integrations/jira/webhook/"
CALLBACK_URL = "https://portal.example/integrations/jira/webhook/"
SCOPES_WITH_WEBHOOKS = ["read:jira-work", "read:jira-user", "read:me", "offline_access", "manage:jira-webhook"]
ACCOUNT = "557058:alice-0001"
CLOUD = "cloud-acme"
SITE_URL = "https://acme.atlassian.net"

Factory = Callable[..., JiraConnection]


def api(cloud_id: str, path: str) -> str:
    return f"{API}/ex/jira/{cloud_id}/rest/api/3/{path}"


def webhook_connection(make_connection: Factory, user: User, **overrides: Any) -> JiraConnection:
    values: dict[str, Any] = {
        "account_id": ACCOUNT,
        "scopes": SCOPES_WITH_WEBHOOKS,
        "sites": [(CLOUD, SITE_URL, "Acme")],
    }
    values.update(overrides)
    return make_connection(user, **values)


def only_site(connection: JiraConnection) -> JiraSite:
    return JiraSite.objects.get(connection=connection)


def add_webhooks(site: JiraSite, *, ids: tuple[int | None, int | None], expires_at: datetime) -> None:
    """Both slots' rows for a site: registered where an id is given, pending where None."""
    for slot, webhook_id in zip((WebhookSlot.ASSIGNEE, WebhookSlot.REPORTER), ids, strict=True):
        JiraWebhook.objects.create(
            connection=site.connection,
            site=site,
            slot=slot,
            webhook_id=webhook_id,
            events=list(EVENTS),
            jql_filter=f'{slot} = "{site.connection.account_id}"',
            status=WebhookStatus.PENDING if webhook_id is None else WebhookStatus.ACTIVE,
            registered_at=None if webhook_id is None else expires_at - timedelta(days=30),
            expires_at=None if webhook_id is None else expires_at,
        )


def registered(connection: JiraConnection, *, ids: tuple[int, int] = (1001, 1002), expires_at: datetime) -> None:
    """The connection's only site with both webhooks registered, as a sync leaves them."""
    site = only_site(connection)
    add_webhooks(site, ids=ids, expires_at=expires_at)
    JiraSite.objects.filter(pk=site.pk).update(webhooks_next_check_at=expires_at - timedelta(days=20))


def listed(webhook_id: int, jql: str, *, expires: Any = "2030-01-01T00:00:00.000+0000") -> dict[str, Any]:
    return {"id": webhook_id, "jqlFilter": jql, "events": list(EVENTS), "expirationDate": expires, "url": CALLBACK_URL}


def page(*values: dict[str, Any], is_last: bool = True, start: int = 0) -> dict[str, Any]:
    return {"isLast": is_last, "maxResults": 100, "startAt": start, "total": len(values), "values": list(values)}


def bodies(mocked: responses.RequestsMock, method: str, url: str) -> list[Any]:
    return [
        json.loads(call.request.body or b"null")
        for call in mocked.calls
        if call.request.method == method and (call.request.url or "").split("?")[0] == url
    ]


# --- Deliveries ------------------------------------------------------------------------


def token(
    *,
    key: str | None = None,
    algorithm: str = "HS256",
    claims: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> str:
    moment = now or datetime.now(tz=UTC)
    payload = {"iss": "jira", "iat": int(moment.timestamp()), "exp": int((moment + timedelta(minutes=5)).timestamp())}
    payload.update(claims or {})
    return jwt.encode(payload, key if key is not None else settings.ATLASSIAN_CLIENT_SECRET, algorithm=algorithm)


def unsigned_token() -> str:
    """alg "none": a token anyone can make."""
    return jwt.encode({"iss": "jira"}, None, algorithm="none")


def delivery(
    webhook_ids: list[int],
    *,
    event: str = "jira:issue_updated",
    key: str = "ACME-7",
    summary: str = "Fix the login redirect",
    actor: str = "Grace Hopper",
    site_url: str = SITE_URL,
) -> dict[str, Any]:
    return {
        "timestamp": 1_767_225_600_000,
        "webhookEvent": event,
        "issue_event_type_name": "issue_generic",
        "user": {"accountId": "557058:grace-0002", "displayName": actor},
        "issue": {
            "id": "10007",
            "key": key,
            "self": f"{site_url}/rest/api/3/issue/10007",
            "fields": {"summary": summary, "status": {"name": "In Progress"}},
        },
        "matchedWebhookIds": webhook_ids,
    }


_identifiers = itertools.count(1)


def post_delivery(
    client: Client,
    body: dict[str, Any] | bytes,
    *,
    authorization: str | None = None,
    identifier: str | None = None,
    signed: bool = True,
    **headers: str,
) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    extra: dict[str, str] = {}
    if authorization is not None:
        extra["HTTP_AUTHORIZATION"] = authorization
    elif signed:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {token()}"
    extra["HTTP_X_ATLASSIAN_WEBHOOK_IDENTIFIER"] = identifier or f"delivery-{next(_identifiers)}"
    extra.update(headers)
    return client.post(WEBHOOK_PATH, data=raw, content_type="application/json", **extra)


# --- A stateful Atlassian, for the long-running tests ------------------------------------


@dataclass
class FakeJiraWebhooks:
    """Jira's webhook endpoints for one app and user across sites, on a clock: webhooks
    live 30 days, refresh extends only known ids (ignoring others, silently), expired ones
    vanish, at most 5 per site. Counts every webhook that ever expired."""

    now: Callable[[], datetime]
    next_id: int = 5000
    # cloud_id -> {id: (jql, events, expires_at)}
    sites: dict[str, dict[int, tuple[str, list[str], datetime]]] = field(default_factory=dict)
    expired: int = 0
    calls: dict[str, int] = field(default_factory=lambda: {"GET": 0, "POST": 0, "PUT": 0, "DELETE": 0})

    def install(self, mocked: responses.RequestsMock, cloud_id: str) -> None:
        base = api(cloud_id, "webhook")
        for method in ("GET", "POST", "DELETE"):
            mocked.add_callback(method, base, callback=self._handler(cloud_id))
        mocked.add_callback("PUT", f"{base}/refresh", callback=self._handler(cloud_id))

    def forget(self, cloud_id: str, webhook_id: int) -> None:
        self.sites[cloud_id].pop(webhook_id, None)

    def _expire(self, cloud_id: str) -> dict[int, tuple[str, list[str], datetime]]:
        hooks = self.sites.setdefault(cloud_id, {})
        for webhook_id, (_jql, _events, expires_at) in list(hooks.items()):
            if expires_at <= self.now():
                self.expired += 1
                del hooks[webhook_id]
        return hooks

    def _handler(self, cloud_id: str) -> Callable[[PreparedRequest], tuple[int, dict[str, str], str]]:
        def handle(request: PreparedRequest) -> tuple[int, dict[str, str], str]:
            method = request.method or "GET"
            self.calls[method] += 1
            hooks = self._expire(cloud_id)
            body = json.loads(request.body or b"{}") if request.body else {}
            if method == "GET":
                values = [
                    listed(i, jql, expires=int(exp.timestamp() * 1000)) | {"events": events}
                    for i, (jql, events, exp) in hooks.items()
                ]
                return 200, {}, json.dumps(page(*values))
            if method == "POST":
                results = []
                for spec in body["webhooks"]:
                    if len(hooks) >= 5:
                        results.append({"errors": ["Only 5 webhooks per app, user and site."]})
                        continue
                    self.next_id += 1
                    hooks[self.next_id] = (spec["jqlFilter"], spec["events"], self.now() + timedelta(days=30))
                    results.append({"createdWebhookId": self.next_id})
                return 200, {}, json.dumps({"webhookRegistrationResult": results})
            if method == "PUT":
                expires_at = self.now() + timedelta(days=30)
                for webhook_id in body["webhookIds"]:
                    if webhook_id in hooks:
                        jql, events, _old = hooks[webhook_id]
                        hooks[webhook_id] = (jql, events, expires_at)
                return 200, {}, json.dumps({"expirationDate": expires_at.strftime("%Y-%m-%dT%H:%M:%S.000+0000")})
            for webhook_id in body["webhookIds"]:
                hooks.pop(webhook_id, None)
            return 202, {}, ""

        return handle
