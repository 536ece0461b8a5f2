"""A good callback: tokens exchanged, identity and sites read, one connection upserted."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
import responses
from cryptography.fernet import Fernet
from django.conf import settings
from django.db import connection as db_connection
from django.test import Client
from django.utils import timezone

from accounts.models import User
from integrations.models import Actor, ConnectionEvent, ConnectionStatus, EventKind, JiraConnection, JiraSite
from tests.support.accounts import logged_in
from tests.support.atlassian import ME_URL, RESOURCES_URL, TOKEN_URL, token_calls
from tests.support.oauth import (
    ACCESS_TOKEN,
    ACCOUNT_ID,
    CODE,
    REFRESH_TOKEN,
    SITE_A,
    SITE_B,
    SITE_C,
    callback,
    connect,
    connect_reply,
    me_reply,
    start_flow,
)
from tests.support.secrets import assert_no_secrets, raw_rows

SANDBOX = "http://127.0.0.1:8001"


def _messages(client: Client) -> str:
    return client.get("/settings/").content.decode()


def test_success_lands_on_a_clean_settings_url_that_is_not_cached_nor_referred(
    alice: User, mocked: responses.RequestsMock
) -> None:
    client = logged_in(alice)

    response = connect(client, mocked)

    assert response.status_code == 302
    assert response["Location"] == "/settings/"
    assert "no-store" in response["Cache-Control"]
    assert response["Referrer-Policy"] == "no-referrer"
    assert "Connected Jira as Alice Atlassian." in _messages(client)


def test_success_stores_identity_tokens_expiry_and_scopes(alice: User, mocked: responses.RequestsMock) -> None:
    frozen = timezone.now().replace(microsecond=0)

    with mock.patch("integrations.clock.now", return_value=frozen):
        connect(logged_in(alice), mocked)

    connection = JiraConnection.objects.get()
    assert connection.user == alice
    assert connection.account_id == ACCOUNT_ID
    assert connection.account_name == "Alice Atlassian"
    assert connection.account_email == "alice@acme.example"
    assert connection.account_avatar_url == "https://avatar-management.services.atlassian.com/alice.png"
    assert connection.access_token == ACCESS_TOKEN
    assert connection.refresh_token == REFRESH_TOKEN
    assert connection.scopes == ["read:jira-work", "read:jira-user", "read:me", "offline_access"]
    assert connection.status == ConnectionStatus.ACTIVE
    assert connection.version == 1
    # 3600 s from when the request left, less the one-minute safety margin.
    assert connection.access_token_expires_at == frozen + timedelta(seconds=3600 - 60)
    assert connection.tokens_issued_at == connection.first_consented_at == frozen
    assert connection.last_refreshed_at is None
    assert connection.reconnect_by - connection.first_consented_at == timedelta(days=365)


def test_success_records_a_connected_event_by_the_user(alice: User, mocked: responses.RequestsMock) -> None:
    connect(logged_in(alice), mocked)

    event = ConnectionEvent.objects.get()
    assert event.kind == EventKind.CONNECTED
    assert event.actor == Actor.USER
    assert event.actor_user == alice
    assert event.user == alice
    assert event.connection == JiraConnection.objects.get()
    assert event.account_id == ACCOUNT_ID


def test_code_exchange_sends_the_documented_json_body(alice: User, mocked: responses.RequestsMock) -> None:
    connect(logged_in(alice), mocked)

    assert mocked.calls[0].request.url == TOKEN_URL
    assert mocked.calls[0].request.headers["Content-Type"] == "application/json"
    assert token_calls(mocked) == [
        {
            "grant_type": "authorization_code",
            "client_id": "test-client-id",
            "client_secret": "test-client-secret-do-not-log-a8f3c61e9b2d4075e1c9f0a7b3d5e2c4f6",
            "code": CODE,
            "redirect_uri": settings.ATLASSIAN_REDIRECT_URI,
        }
    ]
    # Sites and identity are read with the new access token, exactly once each.
    reads = [call.request for call in mocked.calls if call.request.url in (RESOURCES_URL, ME_URL)]
    assert sorted(r.url for r in reads) == [ME_URL, RESOURCES_URL]
    assert all(r.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}" for r in reads)


def test_every_call_of_the_connect_flow_is_sent_with_the_configured_timeout(
    alice: User, mocked: responses.RequestsMock, settings: Any
) -> None:
    # Not the default: a hard-coded (5, 20) must not pass for reading the setting.
    settings.ATLASSIAN_TIMEOUT = (1.5, 7.5)

    connect(logged_in(alice), mocked)

    sent = sorted((call.request.url, call.request.req_kwargs["timeout"]) for call in mocked.calls)
    assert sent == [(ME_URL, (1.5, 7.5)), (RESOURCES_URL, (1.5, 7.5)), (TOKEN_URL, (1.5, 7.5))]


def test_no_sites_still_stores_the_connection_with_a_warning(alice: User, mocked: responses.RequestsMock) -> None:
    client = logged_in(alice)

    response = connect(client, mocked, sites=[])

    assert response.status_code == 302
    assert JiraConnection.objects.count() == 1
    assert JiraSite.objects.count() == 0
    page = _messages(client)
    assert "Your Atlassian account has no Jira sites this app can reach." in page
    assert "No Jira sites are reachable with this account." in page


def test_three_sites_become_three_rows_with_their_details(alice: User, mocked: responses.RequestsMock) -> None:
    connect(logged_in(alice), mocked, sites=[SITE_C, SITE_A, SITE_B])

    rows = {site.cloud_id: site for site in JiraSite.objects.all()}
    assert set(rows) == {"cloud-aaa", "cloud-bbb", "cloud-ccc"}
    for reply in (SITE_A, SITE_B, SITE_C):
        site = rows[reply["id"]]
        assert (site.name, site.url, site.avatar_url, site.scopes, site.enabled) == (
            reply["name"],
            reply["url"],
            reply["avatarUrl"],
            reply["scopes"],
            True,
        )


def test_a_site_listed_twice_becomes_one_row_with_both_scopes(alice: User, mocked: responses.RequestsMock) -> None:
    # Atlassian lists one entry per product on a site: same cloud id, other scopes.
    again = {**SITE_A, "scopes": ["write:jira-work"]}

    connect(logged_in(alice), mocked, sites=[SITE_A, again])

    site = JiraSite.objects.get()
    assert site.cloud_id == "cloud-aaa"
    assert site.scopes == ["read:jira-user", "read:jira-work", "write:jira-work"]


def test_reconnecting_the_same_account_updates_the_row_and_resyncs_sites(
    alice: User, mocked: responses.RequestsMock
) -> None:
    client = logged_in(alice)
    connect(client, mocked, sites=[SITE_A, SITE_B])
    first = JiraConnection.objects.get()
    kept = JiraSite.objects.get(cloud_id=SITE_B["id"])
    assert client.post(f"/integrations/jira/sites/{kept.pk}/enabled/", {"enabled": "0"}).status_code == 302
    JiraConnection.objects.filter(pk=first.pk).update(
        status=ConnectionStatus.NEEDS_RECONNECT, status_reason="grant_revoked", status_message="Reconnect."
    )
    mocked.reset()
    later = timezone.now() + timedelta(days=30)

    with mock.patch("integrations.clock.now", return_value=later):
        client.force_login(alice)  # a month on, the session has long ended: a fresh sign-in
        response = connect(
            client,
            mocked,
            sites=[{**SITE_B, "name": "Beta Renamed"}, SITE_C],
            tokens=connect_reply(access_token="new-access-token", refresh_token="new-refresh-token"),
        )

    assert response.status_code == 302
    connection = JiraConnection.objects.get()
    assert connection.pk == first.pk
    assert connection.version == first.version + 1
    assert connection.access_token == "new-access-token"
    assert connection.refresh_token == "new-refresh-token"
    assert connection.status == ConnectionStatus.ACTIVE
    assert (connection.status_reason, connection.status_message) == ("", "")
    assert connection.first_consented_at == later
    sites = {site.cloud_id: site for site in JiraSite.objects.all()}
    assert set(sites) == {SITE_B["id"], SITE_C["id"]}
    assert sites[SITE_B["id"]].pk == kept.pk
    assert sites[SITE_B["id"]].name == "Beta Renamed"
    assert sites[SITE_B["id"]].enabled is False
    assert sites[SITE_C["id"]].enabled is True
    assert ConnectionEvent.objects.filter(kind=EventKind.RECONNECTED, actor_user=alice).count() == 1
    assert "Reconnected Jira as Alice Atlassian." in _messages(client)


def test_a_second_atlassian_account_adds_a_second_connection(alice: User, mocked: responses.RequestsMock) -> None:
    client = logged_in(alice)
    connect(client, mocked)
    mocked.reset()

    connect(client, mocked, me=me_reply(account_id="557058:second", name="Alice Work"), sites=[SITE_B])

    connections = list(JiraConnection.objects.order_by("pk"))
    assert [c.account_id for c in connections] == [ACCOUNT_ID, "557058:second"]
    assert [c.sites.get().cloud_id for c in connections] == [SITE_A["id"], SITE_B["id"]]


def test_the_same_atlassian_account_for_two_portal_users_makes_two_connections(
    alice: User, bob: User, mocked: responses.RequestsMock
) -> None:
    connect(logged_in(alice), mocked)
    mocked.reset()

    connect(logged_in(bob), mocked)

    assert sorted(JiraConnection.objects.values_list("user__email", flat=True)) == [
        "alice@example.com",
        "bob@example.com",
    ]


def test_tokens_are_encrypted_in_the_database_column(alice: User, mocked: responses.RequestsMock) -> None:
    connect(logged_in(alice), mocked)

    with db_connection.cursor() as cursor:
        cursor.execute("SELECT access_token, refresh_token FROM integrations_jiraconnection")
        rows = cursor.fetchall()

    assert len(rows) == 1
    raw_access, raw_refresh = (bytes(value) for value in rows[0])
    assert_no_secrets(raw_rows(), ACCESS_TOKEN, REFRESH_TOKEN)
    for raw, token in ((raw_access, ACCESS_TOKEN), (raw_refresh, REFRESH_TOKEN)):
        assert Fernet(settings.FERNET_KEYS[0]).decrypt(raw).decode() == token


@pytest.mark.parametrize(
    "picture",
    [
        "javascript:alert(1)",
        "data:image/svg+xml;base64,PHN2Zy8+",
        "http://avatar.example/alice.png",
        # The local sandbox's origin, while the portal talks to the real Atlassian.
        f"{SANDBOX}/avatars/ada.svg",
    ],
)
def test_a_non_https_avatar_is_not_stored(alice: User, mocked: responses.RequestsMock, picture: str) -> None:
    connect(logged_in(alice), mocked, me={**me_reply(), "picture": picture})

    assert JiraConnection.objects.get().account_avatar_url == ""


def _connect_to_sandbox(client: Client, mocked: responses.RequestsMock, *, picture: str, site_avatar: str) -> None:
    """One whole flow with ATLASSIAN_API_URL on the local sandbox (http, loopback)."""
    mocked.add(responses.POST, TOKEN_URL, json=connect_reply())
    mocked.add(
        responses.GET, f"{SANDBOX}/oauth/token/accessible-resources", json=[{**SITE_A, "avatarUrl": site_avatar}]
    )
    mocked.add(responses.GET, f"{SANDBOX}/me", json={**me_reply(), "picture": picture})
    assert callback(client, code=CODE, state=start_flow(client)).status_code == 302


def test_an_http_avatar_on_the_local_sandbox_origin_is_kept(
    alice: User, mocked: responses.RequestsMock, settings: Any
) -> None:
    settings.ATLASSIAN_API_URL = SANDBOX
    _connect_to_sandbox(
        logged_in(alice), mocked, picture=f"{SANDBOX}/avatars/ada.svg", site_avatar=f"{SANDBOX}/avatars/acme.svg"
    )

    assert JiraConnection.objects.get().account_avatar_url == f"{SANDBOX}/avatars/ada.svg"
    assert JiraSite.objects.get().avatar_url == f"{SANDBOX}/avatars/acme.svg"


@pytest.mark.parametrize(
    "picture",
    [
        "http://avatar.example/ada.png",
        "http://127.0.0.1:8002/avatars/ada.svg",
        "http://localhost:8001/avatars/ada.svg",
        "http://127.0.0.1:80010/avatars/ada.svg",
        "http://127.0.0.1:8001",
        # Userinfo tricks: a browser loads both from evil.example.
        "http://evil.example\\@127.0.0.1:8001/ada.svg",
        "http://127.0.0.1:8001@evil.example/ada.svg",
        "javascript:alert(1)",
        "data:image/svg+xml;base64,PHN2Zy8+",
    ],
)
def test_with_the_sandbox_other_non_https_avatars_are_still_dropped(
    alice: User, mocked: responses.RequestsMock, settings: Any, picture: str
) -> None:
    settings.ATLASSIAN_API_URL = SANDBOX
    _connect_to_sandbox(logged_in(alice), mocked, picture=picture, site_avatar=picture)

    assert JiraConnection.objects.get().account_avatar_url == ""
    assert JiraSite.objects.get().avatar_url == ""


def test_nul_characters_in_provider_text_are_dropped_and_the_connection_is_stored(
    alice: User, mocked: responses.RequestsMock
) -> None:
    # PostgreSQL refuses NUL in text and jsonb: kept, it would turn a good connect into a 500.
    site = {**SITE_A, "name": "Acme\x00 Corp", "scopes": ["read:jira-work\x00"]}
    me = {**me_reply(), "name": "Alice\x00 Liddell"}

    response = connect(logged_in(alice), mocked, sites=[site], me=me)

    assert response.status_code == 302
    stored = JiraConnection.objects.get()
    assert stored.account_name == "Alice Liddell"
    assert list(stored.sites.values_list("name", "scopes")) == [("Acme Corp", ["read:jira-work"])]


def test_a_first_connect_that_loses_the_insert_race_updates_the_winning_row(
    alice: User, mocked: responses.RequestsMock
) -> None:
    client = logged_in(alice)
    connect(client, mocked, sites=[SITE_A])
    winner = JiraConnection.objects.get()
    mocked.reset()
    real_select = JiraConnection.objects.select_for_update
    lookups = {"n": 0}

    def other_tab_not_yet_committed(*args: Any, **kwargs: Any) -> Any:
        # The first lookup misses, as it would before the other tab's insert commits.
        lookups["n"] += 1
        rows = real_select(*args, **kwargs)
        return rows.none() if lookups["n"] == 1 else rows

    with mock.patch.object(JiraConnection.objects, "select_for_update", other_tab_not_yet_committed):
        response = connect(client, mocked, sites=[SITE_A], tokens=connect_reply(access_token="tab-2-access"))

    assert response.status_code == 302
    assert response["Location"] == "/settings/"
    connection = JiraConnection.objects.get()
    assert connection.pk == winner.pk
    assert connection.access_token == "tab-2-access"
    assert connection.version == winner.version + 1
    assert lookups["n"] == 2
