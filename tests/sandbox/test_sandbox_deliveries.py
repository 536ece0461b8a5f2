"""Deliveries: what an issue change sends to matching webhooks, signed, retried, counted."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from sandbox.config import CLIENT_SECRET, DAY
from sandbox.delivery import JWT_TTL, RETRY_SCHEDULE
from sandbox.seed import ACME, ADA, ALAN, GLOBEX, GRACE
from sandbox.testing import (
    WEBHOOK_SCOPE,
    SandboxClient,
    WebhookReceiver,
    change_issue,
    comment_on_issue,
    deliveries,
    register_webhooks,
)

SCALE = 0.001  # the ~30-minute retry schedule in about 2 seconds


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def ada(client: SandboxClient) -> str:
    client.configure(delivery_retry_scale=SCALE, access_ttl=int(60 * DAY))
    return str(client.connect(account_id=ADA, scope=WEBHOOK_SCOPE)["access_token"])


def register(client: SandboxClient, token: str, url: str, *hooks: dict[str, Any], cloud_id: str = ACME) -> list[int]:
    answer = register_webhooks(client, token, cloud_id, url=url, webhooks=list(hooks))
    return [r["createdWebhookId"] for r in answer.json()["webhookRegistrationResult"]]


def hook(jql: str = "project = ACME", *events: str, **extra: Any) -> dict[str, Any]:
    return {"events": list(events or ["jira:issue_updated"]), "jqlFilter": jql, **extra}


def verify(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, CLIENT_SECRET, algorithms=["HS256"], options={"require": ["iat", "exp"]})
    return claims


def test_an_issue_change_is_delivered_signed_with_the_changelog(
    client: SandboxClient, ada: str, receiver: WebhookReceiver
) -> None:
    [hook_id] = register(client, ada, receiver.url, hook())
    change_issue(client, "ACME-1", summary="Ship the webhooks", status="Done", actor=GRACE)
    [delivery] = receiver.wait_for(1)
    assert delivery.path == "/jira/webhook"
    headers = delivery.headers
    scheme, _, token = headers["Authorization"].partition(" ")
    assert scheme == "Bearer"
    claims = verify(token)
    assert set(claims) == {"iss", "iat", "exp"}
    assert claims["iss"] == client.config.client_id
    assert claims["exp"] - claims["iat"] == JWT_TTL
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "x" * 64, algorithms=["HS256"])
    assert headers["X-Atlassian-Webhook-Flow"] == "Primary"
    assert headers["X-Atlassian-Webhook-Identifier"]
    assert "X-Atlassian-Webhook-Retry" not in headers
    assert headers["Content-Type"] == "application/json"
    body = delivery.json()
    assert body["webhookEvent"] == "jira:issue_updated"
    assert body["issue_event_type_name"] == "issue_generic"
    assert body["matchedWebhookIds"] == [hook_id]
    assert isinstance(body["timestamp"], int)
    assert body["user"]["accountId"] == GRACE
    assert body["issue"]["key"] == "ACME-1"
    assert body["issue"]["self"] == f"https://acme.atlassian.net/rest/api/2/issue/{body['issue']['id']}"
    assert body["issue"]["fields"]["summary"] == "Ship the webhooks"
    assert body["issue"]["fields"]["status"]["name"] == "Done"
    items = body["changelog"]["items"]
    assert [(i["field"], i["toString"]) for i in items] == [("summary", "Ship the webhooks"), ("status", "Done")]
    assert items[1]["fieldId"] == "status"
    assert items[1]["fromString"] == "To Do"
    assert (items[1]["from"], items[1]["to"]) == ("10000", "10002")


def test_a_comment_sends_comment_created_and_issue_updated(
    client: SandboxClient, ada: str, receiver: WebhookReceiver
) -> None:
    [ids] = [register(client, ada, receiver.url, hook("issueKey = ACME-2", "comment_created", "jira:issue_updated"))]
    comment_on_issue(client, "ACME-2", "Looks good to me", actor=ALAN)
    received = receiver.wait_for(2)
    by_event = {d.json()["webhookEvent"]: d.json() for d in received}
    assert set(by_event) == {"comment_created", "jira:issue_updated"}
    comment = by_event["comment_created"]["comment"]
    assert (comment["body"], comment["author"]["accountId"]) == ("Looks good to me", ALAN)
    assert comment["self"].endswith(f"/comment/{comment['id']}")
    assert by_event["comment_created"]["issue"]["key"] == "ACME-2"
    assert by_event["jira:issue_updated"]["issue_event_type_name"] == "issue_commented"
    assert "changelog" not in by_event["jira:issue_updated"]
    assert all(d.json()["matchedWebhookIds"] == ids for d in received)
    identifiers = {d.headers["X-Atlassian-Webhook-Identifier"] for d in received}
    assert len(identifiers) == 2


def test_only_matching_webhooks_are_delivered_and_named(
    client: SandboxClient, ada: str, receiver: WebhookReceiver
) -> None:
    mine, done_only, other_issue, comments_only, summary_only = register(
        client,
        ada,
        receiver.url,
        hook("assignee = currentUser()"),
        hook("status = Done"),
        hook("issueKey = ACME-9"),
        hook("project = ACME", "comment_created"),
        hook("project = ACME", fieldIdsFilter=["summary"]),
    )
    register(client, ada, receiver.url, hook("project = GLX"), cloud_id=GLOBEX)
    # ACME-1 is Ada's; moving it to In Progress matches neither "status = Done" nor the others.
    change_issue(client, "ACME-1", status="In Progress")
    [first] = receiver.wait_for(1)
    assert first.json()["matchedWebhookIds"] == [mine]
    change_issue(client, "ACME-1", summary="Renamed")
    second = receiver.wait_for(2)[1]
    assert second.json()["matchedWebhookIds"] == [mine, summary_only]
    assert deliveries(client)[-1]["webhook_ids"] == [mine, summary_only]
    assert {done_only, other_issue, comments_only}.isdisjoint(i for d in deliveries(client) for i in d["webhook_ids"])


def test_webhooks_of_other_users_match_with_their_own_current_user(
    client: SandboxClient, ada: str, receiver: WebhookReceiver
) -> None:
    grace = client.connect(account_id=GRACE, scope=WEBHOOK_SCOPE)["access_token"]
    [graces] = register(client, grace, receiver.url, hook("assignee = currentUser()"))
    register(client, ada, receiver.url, hook("assignee = currentUser()"))
    change_issue(client, "ACME-1", assignee=GRACE)  # Ada's issue, now Grace's
    [delivery] = receiver.wait_for(1)
    body = delivery.json()
    assert body["matchedWebhookIds"] == [graces]
    assert body["issue_event_type_name"] == "issue_assigned"
    [item] = body["changelog"]["items"]
    assert (item["from"], item["to"], item["toString"]) == (ADA, GRACE, "Grace Hopper")


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 503])
def test_retryable_answers_are_retried_with_the_same_identifier(
    client: SandboxClient, ada: str, receiver: WebhookReceiver, status: int
) -> None:
    register(client, ada, receiver.url, hook())
    receiver.answer_with(status, status)
    change_issue(client, "ACME-3", summary="Retry me")
    received = receiver.wait_for(3)
    assert len({d.headers["X-Atlassian-Webhook-Identifier"] for d in received}) == 1
    assert [d.headers.get("X-Atlassian-Webhook-Retry") for d in received] == [None, "1", "2"]
    assert len({d.body for d in received}) == 1
    for d in received:
        verify(d.headers["Authorization"].split()[1])
    [record] = deliveries(client)
    assert record["status"] == "delivered"
    assert [a["outcome"] for a in record["attempts"]] == [str(status), str(status), "200"]
    # The gaps follow the (scaled) schedule.
    times = [a["at"] for a in record["attempts"]]
    assert times[1] - times[0] >= RETRY_SCHEDULE[0] * SCALE
    assert times[2] - times[1] >= RETRY_SCHEDULE[1] * SCALE
    counters = client.counters()["deliveries"]
    assert counters == {"queued": 1, "sent": 3, "delivered": 1, "retried": 2, "failed": 0, "pending": 0}


def test_a_client_error_is_not_retried(client: SandboxClient, ada: str, receiver: WebhookReceiver) -> None:
    register(client, ada, receiver.url, hook())
    receiver.answer_with(400)
    change_issue(client, "ACME-3", summary="Refused")
    [record] = deliveries(client)
    assert (record["status"], [a["outcome"] for a in record["attempts"]]) == ("failed", ["400"])
    assert len(receiver.received) == 1
    assert client.counters()["deliveries"]["failed"] == 1


def test_an_unreachable_receiver_is_retried_until_the_schedule_ends(client: SandboxClient, ada: str) -> None:
    client.configure(delivery_retry_scale=SCALE / 10)
    with WebhookReceiver() as gone:
        url = gone.url
    register(client, ada, url, hook())
    change_issue(client, "ACME-4", summary="Nobody listens")
    [record] = deliveries(client, settle=10)
    assert record["status"] == "failed"
    assert [a["outcome"] for a in record["attempts"]] == ["connection error"] * (len(RETRY_SCHEDULE) + 1)
    counters = client.counters()["deliveries"]
    assert (counters["sent"], counters["retried"], counters["failed"]) == (9, 8, 1)


def test_a_receiver_that_does_not_answer_in_time_is_retried(
    client: SandboxClient, ada: str, receiver: WebhookReceiver
) -> None:
    client.configure(delivery_timeout=0.2)
    register(client, ada, receiver.url, hook())
    receiver.hang_next(1)
    change_issue(client, "ACME-4", summary="Slow")
    [record] = deliveries(client)
    assert [a["outcome"] for a in record["attempts"]] == ["timeout", "200"]


def test_pending_deliveries_are_inspectable_before_acknowledgement(
    client: SandboxClient, ada: str, receiver: WebhookReceiver
) -> None:
    client.configure(delivery_retry_scale=1000)  # the first retry would wait hours
    register(client, ada, receiver.url, hook())
    receiver.answer_with(503)
    change_issue(client, "ACME-5", summary="Later")
    receiver.wait_for(1)
    [pending] = deliveries(client, settle=0.5, status="pending")
    assert pending["attempts"][0]["outcome"] == "503"
    assert pending["next_attempt_at"] > pending["attempts"][0]["at"]
    assert pending["payload"]["issue"]["key"] == "ACME-5"
    assert client.counters()["deliveries"]["pending"] == 1
    assert deliveries(client, settle=None, status="delivered") == []


def test_expired_webhooks_get_no_delivery(client: SandboxClient, ada: str, receiver: WebhookReceiver) -> None:
    register(client, ada, receiver.url, hook())
    client.advance(30 * DAY)
    change_issue(client, "ACME-6", summary="After expiry")
    assert deliveries(client) == []
    assert receiver.received == []


def test_deleted_webhooks_get_no_delivery(client: SandboxClient, ada: str, receiver: WebhookReceiver) -> None:
    ids = register(client, ada, receiver.url, hook())
    client.api(f"/ex/jira/{ACME}/rest/api/3/webhook", ada, method="DELETE", json={"webhookIds": ids})
    change_issue(client, "ACME-6", summary="After delete")
    assert deliveries(client) == []


def test_an_unchanged_issue_sends_nothing(client: SandboxClient, ada: str, receiver: WebhookReceiver) -> None:
    register(client, ada, receiver.url, hook())
    current = change_issue(client, "ACME-7")["fields"]
    change_issue(client, "ACME-7", summary=current["summary"], status=current["status"]["name"])
    assert deliveries(client) == []
    assert client.counters()["deliveries"]["queued"] == 0


def test_a_reset_drops_deliveries_and_their_counters(
    client: SandboxClient, ada: str, receiver: WebhookReceiver
) -> None:
    register(client, ada, receiver.url, hook())
    change_issue(client, "ACME-8", summary="Before reset")
    receiver.wait_for(1)
    client.control("reset", {})
    assert deliveries(client, settle=None) == []
    assert client.counters()["deliveries"]["queued"] == 0


def test_the_change_does_not_wait_for_the_receiver(client: SandboxClient, ada: str, receiver: WebhookReceiver) -> None:
    client.configure(delivery_timeout=20)
    register(client, ada, receiver.url, hook())
    receiver.hang_next(1)
    changed = change_issue(client, "ACME-9", summary="Fire and forget")
    # The change has answered while its delivery is still waiting for the receiver.
    assert changed["fields"]["summary"] == "Fire and forget"
    receiver.wait_for(1)
    [in_flight] = deliveries(client, settle=None)
    assert (in_flight["status"], in_flight["attempts"]) == ("pending", [])
