"""The sandbox's Jira answers conform to Atlassian's OpenAPI document (sandbox/openapi/).

Every answer a test here receives is checked: its status code must be one the document
lists for that operation, and its JSON body must validate against the schema listed for
that status (openapi-schema-validator, OpenAPI 3.0 read context). Two kinds of answer come
from the api.atlassian.com gateway in front of Jira, not from Jira, and the document does
not describe them: 401 for a bad token or a missing scope, and 404 for a site outside the
grant. They are checked against the gateway's exact bodies instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from openapi_schema_validator import OAS30ReadValidator, oas30_format_checker

from sandbox.config import DAY
from sandbox.seed import ACME, ADA, ALAN
from sandbox.testing import WEBHOOK_SCOPE, SandboxClient, change_issue

SPEC_PATH = Path(__file__).resolve().parents[2] / "sandbox" / "openapi" / "jira-platform-v3-subset.json"
SPEC: dict[str, Any] = json.loads(SPEC_PATH.read_text())
GATEWAY = {
    401: [{"code": 401, "message": "Unauthorized"}, {"code": 401, "message": "Unauthorized; scope does not match"}],
    404: [{"errorMessages": ["Site not found"]}],
}
ERROR_COLLECTION = {"$ref": "#/components/schemas/ErrorCollection"}
URL = "https://portal.example.com/integrations/jira/webhook/"


def schema_for(operation: str, method: str, status: int) -> dict[str, Any] | None:
    responses = SPEC["paths"][f"/rest/api/3/{operation}"][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {operation} answered {status}; the document lists {sorted(responses)}"
    content = responses[str(status)].get("content")
    if content:
        schema: dict[str, Any] = content["application/json"]["schema"]
        return schema
    # The document leaves search/jql's 400 without a body schema; Jira's errors are an
    # ErrorCollection everywhere else, and the sandbox is held to that.
    return ERROR_COLLECTION if status == 400 else None


def assert_conforms(answer: requests.Response, operation: str) -> None:
    method = answer.request.method or "GET"
    if answer.status_code in GATEWAY and answer.status_code not in _documented(operation, method):
        assert answer.json() in GATEWAY[answer.status_code]
        return
    schema = schema_for(operation, method, answer.status_code)
    if schema is None:
        return
    validator = OAS30ReadValidator({**schema, "components": SPEC["components"]}, format_checker=oas30_format_checker)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(answer.json())]
    assert errors == [], f"{method} {operation} {answer.status_code} does not conform"


def _documented(operation: str, method: str) -> set[int]:
    return {int(s) for s in SPEC["paths"][f"/rest/api/3/{operation}"][method.lower()]["responses"]}


class Jira:
    """Calls one site's Jira REST API and checks every answer against the document."""

    def __init__(self, client: SandboxClient, token: str, cloud_id: str = ACME) -> None:
        self.client, self.token, self.cloud_id = client, token, cloud_id

    def __call__(self, method: str, operation: str, **kwargs: Any) -> requests.Response:
        path = f"/ex/jira/{self.cloud_id}/rest/api/3/{operation}"
        answer = self.client.api(path, self.token, method=method, **kwargs)
        assert_conforms(answer, operation)
        return answer


@pytest.fixture
def jira(client: SandboxClient) -> Jira:
    client.configure(access_ttl=int(60 * DAY))
    return Jira(client, client.connect(account_id=ADA, scope=WEBHOOK_SCOPE)["access_token"])


def test_the_document_is_the_atlassian_subset_the_sandbox_serves() -> None:
    assert SPEC["openapi"].startswith("3.0")
    assert set(SPEC["paths"]) == {
        "/rest/api/3/myself",
        "/rest/api/3/search/jql",
        "/rest/api/3/webhook",
        "/rest/api/3/webhook/refresh",
    }


def test_a_nonconforming_body_is_caught() -> None:
    """The check itself can fail: a webhook page with an ISO expirationDate does not conform."""
    bad = {"values": [{"id": 1, "jqlFilter": "project = A", "events": ["jira:issue_updated"], "url": URL}]}
    bad["values"][0]["expirationDate"] = "2019-06-01T12:42:30.000+0000"
    schema = schema_for("webhook", "GET", 200)
    assert schema is not None
    validator = OAS30ReadValidator({**schema, "components": SPEC["components"]}, format_checker=oas30_format_checker)
    assert [e.validator for e in validator.iter_errors(bad)] == ["type"]
    with pytest.raises(AssertionError, match="answered 418"):
        schema_for("myself", "GET", 418)


def test_myself(client: SandboxClient, jira: Jira) -> None:
    assert jira("GET", "myself").status_code == 200
    alan = client.connect(account_id=ALAN, scope=WEBHOOK_SCOPE)["access_token"]
    assert Jira(client, alan)("GET", "myself").status_code == 200
    assert Jira(client, "expired-or-unknown")("GET", "myself").status_code == 401
    no_user_scope = client.connect(account_id=ALAN, scope="read:jira-work")["access_token"]
    assert Jira(client, no_user_scope)("GET", "myself").status_code == 401


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_search(client: SandboxClient, jira: Jira, method: str) -> None:
    def search(**params: Any) -> requests.Response:
        if method == "GET":
            return jira("GET", "search/jql", params=params)
        return jira("POST", "search/jql", json=params)

    change_issue(client, "ACME-1", summary="Changed", assignee=ALAN)
    first = search(jql="project = ACME ORDER BY updated DESC", fields="*all", maxResults=20)
    assert (first.status_code, len(first.json()["issues"])) == (200, 20)
    last = search(
        jql="project = ACME ORDER BY updated DESC", nextPageToken=first.json()["nextPageToken"], maxResults=40
    )
    assert last.json()["isLast"] is True
    assert search(jql="assignee = currentUser()").status_code == 200
    for bad in (
        {"jql": "ORDER BY key"},
        {"jql": "project = ACME AND (status = Done"},
        {"jql": "project = ACME AND"},
        {"jql": "project = ACME", "nextPageToken": "forged"},
        {"jql": "project = ACME", "maxResults": "many"},
    ):
        answer = search(**bad)
        assert answer.status_code == 400, bad
        assert answer.json()["errors"] == {}
    assert Jira(client, "nope")("GET", "search/jql", params={"jql": "project = ACME"}).status_code == 401


def test_webhooks(client: SandboxClient, jira: Jira) -> None:
    assert jira("GET", "webhook").json()["values"] == []
    hooks = [
        {"events": ["jira:issue_updated"], "jqlFilter": "project = ACME", "fieldIdsFilter": ["summary"]},
        {"events": ["comment_created"], "jqlFilter": "watchCount = 1"},
        {"events": ["issue_property_set"], "jqlFilter": "project = ACME", "issuePropertyKeysFilter": ["k"]},
    ]
    registered = jira("POST", "webhook", json={"url": URL, "webhooks": hooks})
    results = registered.json()["webhookRegistrationResult"]
    assert [set(r) for r in results] == [{"createdWebhookId"}, {"errors"}, {"createdWebhookId"}]
    ids = [r["createdWebhookId"] for r in results if "createdWebhookId" in r]
    more = [{"events": ["jira:issue_created"], "jqlFilter": f"issueKey = ACME-{n}"} for n in range(1, 5)]
    assert (
        "errors" in jira("POST", "webhook", json={"url": URL, "webhooks": more}).json()["webhookRegistrationResult"][-1]
    )
    assert len(jira("GET", "webhook", params={"maxResults": 2}).json()["values"]) == 2
    assert jira("GET", "webhook", params={"startAt": 2}).json()["isLast"] is True
    assert jira("PUT", "webhook/refresh", json={"webhookIds": [*ids, 424242]}).status_code == 200
    assert jira("DELETE", "webhook", json={"webhookIds": ids}).status_code == 202
    for method, operation, kwargs in [
        ("POST", "webhook", {"json": {"webhooks": hooks}}),
        ("POST", "webhook", {"json": {"url": URL}}),
        ("POST", "webhook", {"json": {"url": "https://other.example.com/", "webhooks": hooks}}),
        ("POST", "webhook", {"data": b"[", "headers": {"Content-Type": "application/json"}}),
        ("GET", "webhook", {"params": {"maxResults": -1}}),
        ("PUT", "webhook/refresh", {"json": {"webhookIds": "all"}}),
        ("DELETE", "webhook", {"json": {}}),
    ]:
        assert jira(method, operation, **kwargs).status_code == 400, (method, operation, kwargs)
    no_manage = client.connect(account_id=ALAN, scope="read:jira-work read:jira-user")["access_token"]
    assert Jira(client, no_manage)("GET", "webhook").status_code == 401
    outside = Jira(client, jira.token, "00000000-0000-0000-0000-000000000000")
    assert outside("PUT", "webhook/refresh", json={"webhookIds": []}).status_code == 404
