"""Dynamic webhooks: registration, its per-webhook errors and the limit, list, refresh, delete, expiry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sandbox.config import DAY
from sandbox.seed import ACME, ADA, ALAN, GLOBEX, GRACE
from sandbox.testing import (
    WEBHOOK_SCOPE,
    SandboxClient,
    delete_webhooks,
    list_webhooks,
    refresh_webhooks,
    register_webhooks,
    sandbox_webhooks,
    webhook_path,
)

URL = "https://portal.example.com/integrations/jira/webhook/"
SCOPE_MISMATCH = {"code": 401, "message": "Unauthorized; scope does not match"}


def hook(jql: str = "project = ACME", events: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"events": ["jira:issue_updated"] if events is None else events, "jqlFilter": jql, **extra}


@pytest.fixture
def ada(client: SandboxClient) -> str:
    # Access tokens that outlive the clock jumps below (webhook life is counted in days).
    client.configure(access_ttl=int(60 * DAY))
    return str(client.connect(account_id=ADA, scope=WEBHOOK_SCOPE)["access_token"])


def registered(client: SandboxClient, token: str, *hooks: dict[str, Any], cloud_id: str = ACME) -> list[Any]:
    answer = register_webhooks(client, token, cloud_id, url=URL, webhooks=list(hooks))
    assert answer.status_code == 200, answer.text
    result: list[Any] = answer.json()["webhookRegistrationResult"]
    return result


def created_ids(results: list[dict[str, Any]]) -> list[int]:
    return [r["createdWebhookId"] for r in results]


def test_registration_answers_200_with_ids_and_errors_in_request_order(client: SandboxClient, ada: str) -> None:
    results = registered(
        client,
        ada,
        hook("project = ACME"),
        hook("watchCount > 1"),
        hook("project = ACME AND status IN (Done, 'In Progress')", ["comment_created"]),
    )
    assert set(results[0]) == {"createdWebhookId"}
    assert results[1] == {"errors": ["The clause watchCount is unsupported"]}
    assert set(results[2]) == {"createdWebhookId"}
    assert results[2]["createdWebhookId"] > results[0]["createdWebhookId"]
    listed = list_webhooks(client, ada, ACME).json()["values"]
    assert [w["id"] for w in listed] == [results[0]["createdWebhookId"], results[2]["createdWebhookId"]]


@pytest.mark.parametrize(
    ("jql", "error"),
    [
        ("project is not EMPTY", "Operator is not is unsupported"),
        ("status ~ Done", "Operator ~ is unsupported"),
        ("created > -1d", "The clause created is unsupported"),
        ("project = ACME ORDER BY key", "The clause ORDER BY is unsupported"),
        ("", "The JQL filter must not be empty."),
        ("(project = ACME", "Error in the JQL Query: Expecting ')' before the end of the query."),
    ],
)
def test_jql_outside_the_webhook_subset_is_a_per_webhook_error(
    client: SandboxClient, ada: str, jql: str, error: str
) -> None:
    assert registered(client, ada, hook(jql)) == [{"errors": [error]}]
    assert list_webhooks(client, ada, ACME).json()["values"] == []


@pytest.mark.parametrize(
    "jql",
    [
        "issueKey = ACME-1",
        "project IN (ACME, GLX) AND issuetype = Bug",
        "status != Done OR assignee = currentUser()",
        "reporter NOT IN (557058:grace-0002)",
        "issue.property[portal].synced = true",
        "cf[10014] = ACME-7",
        "project != null",
    ],
)
def test_the_documented_jql_subset_is_accepted(client: SandboxClient, ada: str, jql: str) -> None:
    assert set(registered(client, ada, hook(jql))[0]) == {"createdWebhookId"}


def test_unknown_or_missing_events_are_per_webhook_errors(client: SandboxClient, ada: str) -> None:
    results = registered(client, ada, hook(events=["jira:issue_updated", "sprint_started"]), hook(events=[]))
    assert results == [
        {"errors": ["The event sprint_started is not supported."]},
        {"errors": ["At least one event must be specified."]},
    ]


def test_all_eight_documented_events_are_accepted(client: SandboxClient, ada: str) -> None:
    spec = json.loads(
        (Path(__file__).resolve().parents[2] / "sandbox/openapi/jira-platform-v3-subset.json").read_text()
    )
    events = spec["components"]["schemas"]["WebhookDetails"]["properties"]["events"]["items"]["enum"]
    assert len(events) == 8
    [result] = registered(client, ada, hook(events=events))
    assert "createdWebhookId" in result
    assert list_webhooks(client, ada, ACME).json()["values"][0]["events"] == events


def test_the_sixth_webhook_per_app_user_and_site_is_refused(client: SandboxClient, ada: str) -> None:
    first = registered(client, ada, *[hook(f"issueKey = ACME-{n}") for n in range(1, 5)])
    assert len(created_ids(first)) == 4
    second = registered(client, ada, hook("issueKey = ACME-5"), hook("issueKey = ACME-6"))
    assert "createdWebhookId" in second[0]
    assert second[1] == {"errors": ["The limit of 5 webhooks per app, per user and per site has been reached."]}
    assert list_webhooks(client, ada, ACME).json()["total"] == 5
    # Per site and per user: Ada on another site, and Alan on the same one, still have room.
    assert "createdWebhookId" in registered(client, ada, hook("project = GLX"), cloud_id=GLOBEX)[0]
    alan = client.connect(account_id=ALAN, scope=WEBHOOK_SCOPE)["access_token"]
    assert "createdWebhookId" in registered(client, alan, hook())[0]
    # Deleting one makes room again.
    delete_webhooks(client, ada, ACME, [first[0]["createdWebhookId"]])
    assert "createdWebhookId" in registered(client, ada, hook())[0]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"webhooks": [hook()]}, "url must not be empty."),
        ({"url": URL}, "webhooks must be a list."),
        ({"url": "not a url", "webhooks": [hook()]}, "url must be an absolute http or https URL."),
        ({"url": URL, "webhooks": [{"events": ["jira:issue_updated"]}]}, "jqlFilter must be a string."),
        ({"url": URL, "webhooks": [{"jqlFilter": "project = ACME"}]}, "events must be a list of strings."),
        ({"url": URL, "webhooks": [hook(fieldIdsFilter="summary")]}, "fieldIdsFilter must be a list of strings."),
    ],
)
def test_an_invalid_registration_body_is_400(
    client: SandboxClient, ada: str, body: dict[str, Any], message: str
) -> None:
    answer = client.api(webhook_path(ACME), ada, method="POST", json=body)
    assert (answer.status_code, answer.json()) == (400, {"errorMessages": [message], "errors": {}})
    assert sandbox_webhooks(client) == []


def test_a_body_that_is_not_json_is_400(client: SandboxClient, ada: str) -> None:
    answer = client.api(webhook_path(ACME), ada, method="POST", data=b"{nope", headers={"Content-Type": "x"})
    assert answer.status_code == 400
    assert answer.json()["errors"] == {}


def test_one_callback_url_per_app_on_a_site(client: SandboxClient, ada: str) -> None:
    registered(client, ada, hook())
    grace = client.connect(account_id=GRACE, scope=WEBHOOK_SCOPE)["access_token"]
    answer = register_webhooks(client, grace, ACME, url="https://elsewhere.example.com/hook", webhooks=[hook()])
    assert (answer.status_code, answer.json()) == (
        400,
        {"errorMessages": ["Only a single URL per app is allowed to be registered."], "errors": {}},
    )
    # The same URL is fine for another user, and another site starts afresh.
    assert "createdWebhookId" in registered(client, grace, hook())[0]
    other = register_webhooks(client, ada, GLOBEX, url="https://elsewhere.example.com/hook", webhooks=[hook()])
    assert "createdWebhookId" in other.json()["webhookRegistrationResult"][0]


def test_list_shows_only_the_callers_webhooks_on_that_site(client: SandboxClient, ada: str) -> None:
    [mine] = created_ids(registered(client, ada, hook(fieldIdsFilter=["summary", "status"])))
    registered(client, ada, hook("project = GLX"), cloud_id=GLOBEX)
    alan = client.connect(account_id=ALAN, scope=WEBHOOK_SCOPE)["access_token"]
    registered(client, alan, hook())
    page = list_webhooks(client, ada, ACME).json()
    expiry = page["values"][0]["expirationDate"]
    assert page == {
        "isLast": True,
        "maxResults": 100,
        "startAt": 0,
        "total": 1,
        "values": [
            {
                "id": mine,
                "jqlFilter": "project = ACME",
                "events": ["jira:issue_updated"],
                "expirationDate": expiry,
                "url": URL,
                "fieldIdsFilter": ["summary", "status"],
            }
        ],
    }
    now_ms = client.control("clock")["now"] * 1000
    assert abs(expiry - (now_ms + 30 * DAY * 1000)) < 5_000
    assert len(sandbox_webhooks(client)) == 3


def test_list_pages_with_start_at_and_max_results(client: SandboxClient, ada: str) -> None:
    ids = created_ids(registered(client, ada, *[hook(f"issueKey = ACME-{n}") for n in range(1, 6)]))
    first = list_webhooks(client, ada, ACME, maxResults=2).json()
    assert ([w["id"] for w in first["values"]], first["isLast"], first["total"]) == (ids[:2], False, 5)
    last = list_webhooks(client, ada, ACME, startAt=4, maxResults=2).json()
    assert ([w["id"] for w in last["values"]], last["isLast"]) == (ids[4:], True)
    bad = list_webhooks(client, ada, ACME, startAt="x")
    assert (bad.status_code, bad.json()) == (400, {"errorMessages": ["startAt must be an integer."], "errors": {}})


def test_refresh_extends_by_30_days_from_now_and_ignores_unknown_ids(client: SandboxClient, ada: str) -> None:
    [kept, other] = created_ids(registered(client, ada, hook(), hook("issueKey = ACME-1")))
    before = {w["id"]: w["expirationDate"] for w in list_webhooks(client, ada, ACME).json()["values"]}
    client.advance(10 * DAY)
    answer = refresh_webhooks(client, ada, ACME, [kept, 999_999])
    assert answer.status_code == 200
    assert set(answer.json()) == {"expirationDate"}
    after = {w["id"]: w["expirationDate"] for w in list_webhooks(client, ada, ACME).json()["values"]}
    assert after[kept] == answer.json()["expirationDate"]
    assert abs(after[kept] - (before[kept] + 10 * DAY * 1000)) < 5_000
    assert after[other] == before[other]


def test_refresh_and_delete_need_webhook_ids(client: SandboxClient, ada: str) -> None:
    for method, rest in (("PUT", "webhook/refresh"), ("DELETE", "webhook")):
        answer = client.api(webhook_path(ACME, rest), ada, method=method, json={})
        assert (answer.status_code, answer.json()["errorMessages"]) == (
            400,
            ["webhookIds must be a list of webhook IDs."],
        )


def test_delete_answers_202_and_leaves_other_users_webhooks(client: SandboxClient, ada: str) -> None:
    [mine] = created_ids(registered(client, ada, hook()))
    alan = client.connect(account_id=ALAN, scope=WEBHOOK_SCOPE)["access_token"]
    [his] = created_ids(registered(client, alan, hook()))
    answer = delete_webhooks(client, ada, ACME, [mine, his, 123])
    assert (answer.status_code, answer.content) == (202, b"")
    assert [w["id"] for w in sandbox_webhooks(client)] == [his]


def test_expired_webhooks_are_gone_and_cannot_be_refreshed(client: SandboxClient, ada: str) -> None:
    [old] = created_ids(registered(client, ada, hook()))
    client.advance(20 * DAY)
    [young] = created_ids(registered(client, ada, hook("issueKey = ACME-1")))
    client.advance(10 * DAY)  # `old` is now exactly 30 days old
    assert [w["id"] for w in list_webhooks(client, ada, ACME).json()["values"]] == [young]
    refresh_webhooks(client, ada, ACME, [old])
    assert [w["id"] for w in sandbox_webhooks(client)] == [young]


@pytest.mark.parametrize(
    "scope",
    ["read:jira-work read:jira-user offline_access", "manage:jira-webhook read:jira-user offline_access"],
)
def test_both_scopes_are_required(client: SandboxClient, scope: str) -> None:
    token = client.connect(scope=scope)["access_token"]
    calls = [
        ("GET", "webhook", None),
        ("POST", "webhook", {"url": URL, "webhooks": [hook()]}),
        ("DELETE", "webhook", {"webhookIds": [1]}),
        ("PUT", "webhook/refresh", {"webhookIds": [1]}),
    ]
    for method, rest, body in calls:
        answer = client.api(webhook_path(ACME, rest), token, method=method, json=body)
        assert (answer.status_code, answer.json()) == (401, SCOPE_MISMATCH)
    assert sandbox_webhooks(client) == []


def test_a_bad_token_is_401_and_another_site_is_404(client: SandboxClient) -> None:
    answer = client.api(webhook_path(ACME), "not-a-token")
    assert (answer.status_code, answer.json()) == (401, {"code": 401, "message": "Unauthorized"})
    grace = client.connect(account_id=GRACE, scope=WEBHOOK_SCOPE)["access_token"]
    answer = register_webhooks(client, grace, GLOBEX, url=URL, webhooks=[hook()])
    assert (answer.status_code, answer.json()) == (404, {"errorMessages": ["Site not found"]})


def test_webhook_calls_are_counted_and_can_be_faulted(client: SandboxClient, ada: str) -> None:
    client.faults({"webhook": {"kinds": ["503"], "count": 1}})
    assert list_webhooks(client, ada, ACME).status_code == 503
    assert list_webhooks(client, ada, ACME).status_code == 200
    refresh_webhooks(client, ada, ACME, [])
    requests_seen = client.counters()["requests"]
    assert (requests_seen["webhook"], requests_seen["webhook_refresh"]) == (2, 1)


def test_reset_forgets_webhooks(client: SandboxClient, ada: str) -> None:
    registered(client, ada, hook())
    client.control("reset", {})
    assert sandbox_webhooks(client) == []
