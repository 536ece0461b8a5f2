"""JiraClient's dynamic webhook calls, against Atlassian's documented shapes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import responses

from integrations import atlassian
from tests.support.webhooks import CALLBACK_URL, api, bodies, listed, page

CLOUD = "cloud-x"
SPEC_A = atlassian.WebhookSpec(events=("jira:issue_updated",), jql_filter='assignee = "a"')
SPEC_B = atlassian.WebhookSpec(events=("comment_created",), jql_filter="watchCount = 1")


class StaticTokens:
    def access_token(self) -> str:
        return "access-token-static-secret"

    def refreshed_access_token(self, *, rejected: str) -> str:
        return "access-token-static-secret"


@pytest.fixture
def client() -> atlassian.JiraClient:
    return atlassian.JiraClient(cloud_id=CLOUD, site_url="https://x.atlassian.net", tokens=StaticTokens())


def test_registration_returns_ids_and_errors_in_request_order_from_a_200(
    client: atlassian.JiraClient, mocked: responses.RequestsMock
) -> None:
    mocked.post(
        api(CLOUD, "webhook"),
        json={
            "webhookRegistrationResult": [
                {"createdWebhookId": 1000},
                {"errors": ["The clause watchCount is unsupported"]},
            ]
        },
    )

    results = client.register_webhooks(url=CALLBACK_URL, webhooks=[SPEC_A, SPEC_B])

    assert results == [
        atlassian.WebhookRegistration(webhook_id=1000),
        atlassian.WebhookRegistration(webhook_id=None, errors=("The clause watchCount is unsupported",)),
    ]
    assert bodies(mocked, "POST", api(CLOUD, "webhook")) == [
        {
            "url": CALLBACK_URL,
            "webhooks": [
                {"events": ["jira:issue_updated"], "jqlFilter": 'assignee = "a"'},
                {"events": ["comment_created"], "jqlFilter": "watchCount = 1"},
            ],
        }
    ]


@pytest.mark.parametrize(
    "reply",
    [
        {"webhookRegistrationResult": [{"createdWebhookId": 1}]},  # one result for two webhooks
        {"webhookRegistrationResult": "yes"},
        {},
        [],
    ],
)
def test_registration_reply_not_shaped_as_documented_is_an_invalid_response(
    client: atlassian.JiraClient, mocked: responses.RequestsMock, reply: object
) -> None:
    mocked.post(api(CLOUD, "webhook"), json=reply)

    with pytest.raises(atlassian.InvalidResponseError):
        client.register_webhooks(url=CALLBACK_URL, webhooks=[SPEC_A, SPEC_B])


def test_a_result_with_neither_id_nor_errors_counts_as_failed(
    client: atlassian.JiraClient, mocked: responses.RequestsMock
) -> None:
    mocked.post(api(CLOUD, "webhook"), json={"webhookRegistrationResult": [{"createdWebhookId": True}]})

    [result] = client.register_webhooks(url=CALLBACK_URL, webhooks=[SPEC_A])

    assert not result.created
    assert result.errors


def test_registration_refused_with_403_is_a_typed_api_error(
    client: atlassian.JiraClient, mocked: responses.RequestsMock
) -> None:
    mocked.post(api(CLOUD, "webhook"), status=403, json={"errorMessages": ["Only apps can register webhooks."]})

    with pytest.raises(atlassian.ApiError, match="Only apps"):
        client.register_webhooks(url=CALLBACK_URL, webhooks=[SPEC_A])


def test_listing_follows_pages_and_reads_both_expiry_shapes(
    client: atlassian.JiraClient, mocked: responses.RequestsMock
) -> None:
    first = page(listed(1, "project = A", expires=1_767_225_600_000), is_last=False)
    second = page(listed(2, "project = B", expires="2026-01-01T00:00:00.000+0000"), start=1)
    mocked.get(
        api(CLOUD, "webhook"),
        json=first,
        match=[responses.matchers.query_param_matcher({"startAt": "0", "maxResults": "100"})],
    )
    mocked.get(
        api(CLOUD, "webhook"),
        json=second,
        match=[responses.matchers.query_param_matcher({"startAt": "1", "maxResults": "100"})],
    )

    found = client.list_webhooks()

    assert [w.id for w in found] == [1, 2]
    assert found[0].expires_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert found[1].expires_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert found[0].jql_filter == "project = A"


def test_listing_without_values_is_an_invalid_response(
    client: atlassian.JiraClient, mocked: responses.RequestsMock
) -> None:
    mocked.get(api(CLOUD, "webhook"), json={"isLast": True})

    with pytest.raises(atlassian.InvalidResponseError):
        client.list_webhooks()


@pytest.mark.parametrize("expiry", [1_767_225_600_000, "2026-01-01T00:00:00.000+0000", "2026-01-01T00:00:00+00:00"])
def test_refresh_returns_the_new_expiry_in_either_shape(
    client: atlassian.JiraClient, mocked: responses.RequestsMock, expiry: object
) -> None:
    mocked.put(api(CLOUD, "webhook/refresh"), json={"expirationDate": expiry})

    assert client.refresh_webhooks([1, 2]) == datetime(2026, 1, 1, tzinfo=UTC)
    assert bodies(mocked, "PUT", api(CLOUD, "webhook/refresh")) == [{"webhookIds": [1, 2]}]


@pytest.mark.parametrize("reply", [{}, {"expirationDate": "soon"}, {"expirationDate": None}, {"expirationDate": True}])
def test_refresh_without_a_readable_expiry_is_an_invalid_response(
    client: atlassian.JiraClient, mocked: responses.RequestsMock, reply: object
) -> None:
    mocked.put(api(CLOUD, "webhook/refresh"), json=reply)

    with pytest.raises(atlassian.InvalidResponseError):
        client.refresh_webhooks([1])


def test_delete_sends_the_ids_and_accepts_an_empty_202(
    client: atlassian.JiraClient, mocked: responses.RequestsMock
) -> None:
    mocked.delete(api(CLOUD, "webhook"), status=202, body=b"")

    client.delete_webhooks([7, 8])

    assert bodies(mocked, "DELETE", api(CLOUD, "webhook")) == [{"webhookIds": [7, 8]}]
