"""The settings page's "Connected apps": what each connection shows, and to whom."""

from __future__ import annotations

from datetime import UTC, datetime

from django.test import Client, override_settings

from accounts.models import User
from integrations.models import ConnectionStatus
from tests.support.accounts import logged_in
from tests.support.connections import ConnectionFactory, tokens_of
from tests.support.secrets import assert_no_secrets

WHEN = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)


def _page(user: User) -> str:
    response = logged_in(user).get("/settings/")
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    return response.content.decode()


def test_a_connection_shows_account_sites_scopes_and_dates(alice: User, make_connection: ConnectionFactory) -> None:
    connection = make_connection(
        alice,
        account_name="Alice Work",
        account_email="alice@work.example",
        account_avatar_url="https://avatar-management.services.atlassian.com/alice.png",
        scopes=["read:jira-work", "offline_access"],
        access_token_expires_at=datetime(2025, 3, 2, 10, 15, tzinfo=UTC),
        last_refreshed_at=datetime(2025, 3, 2, 9, 15, tzinfo=UTC),
        first_consented_at=WHEN,
        sites=[("cloud-a", "https://acme.atlassian.net", "Acme"), ("cloud-b", "https://beta.atlassian.net", "Beta")],
    )
    beta = connection.sites.get(cloud_id="cloud-b")
    beta.enabled = False
    beta.save()

    html = _page(alice)

    assert f'id="connection-{connection.pk}" data-status="active"' in html
    assert "Jira · Alice Work" in html
    assert "alice@work.example" in html
    assert '<img src="https://avatar-management.services.atlassian.com/alice.png"' in html
    assert '<a href="https://acme.atlassian.net" rel="noopener noreferrer" target="_blank">Acme</a>' in html
    assert '<a href="https://beta.atlassian.net" rel="noopener noreferrer" target="_blank">Beta</a>' in html
    acme = connection.sites.get(cloud_id="cloud-a")
    # Acme is shown (its button hides it), Beta hidden (its button shows it).
    for site, value, label in ((acme, "0", "Hide"), (beta, "1", "Show")):
        row = html[html.index(f'id="site-{site.pk}"') :]
        row = row[: row.index("</tr>")]
        assert f'action="/integrations/jira/sites/{site.pk}/enabled/"' in row
        assert f'name="enabled" value="{value}"' in row
        assert f">{label}</button>" in row
    assert "<dd>read:jira-work, offline_access</dd>" in html
    assert "<dd>Active</dd>" in html
    assert "<dd>2025-03-02 10:15 UTC</dd>" in html
    assert "<dd>2025-03-02 09:15 UTC</dd>" in html
    # Atlassian asks for consent again 365 days after the first one.
    assert "<dd>2026-03-01 <span" in html
    assert f'href="/integrations/jira/connections/{connection.pk}/disconnect/"' in html
    assert 'id="connect-jira"' in html
    assert "Connect another Jira account" in html


def test_a_connection_never_refreshed_says_so(alice: User, make_connection: ConnectionFactory) -> None:
    make_connection(alice, last_refreshed_at=None)

    assert "<dd>not yet</dd>" in _page(alice)


def test_needs_reconnect_shows_a_banner_with_reason_and_reconnect_button(
    alice: User, make_connection: ConnectionFactory
) -> None:
    connection = make_connection(
        alice,
        status=ConnectionStatus.NEEDS_RECONNECT,
        status_reason="grant_revoked",
        status_message="Atlassian no longer accepts this connection.",
    )

    html = _page(alice)

    banner = html[html.index(f'id="reconnect-banner-{connection.pk}"') :]
    banner = banner[: banner.index("</div>")]
    assert "This connection needs to be reconnected." in banner
    assert "Atlassian no longer accepts this connection." in banner
    assert 'action="/integrations/jira/connect/"' in banner
    assert "Reconnect</button>" in banner
    assert "Needs reconnect <span" in html
    assert "(grant_revoked)" in html


def test_a_healthy_connection_has_no_reconnect_banner(alice: User, make_connection: ConnectionFactory) -> None:
    connection = make_connection(alice)

    html = _page(alice)

    assert f'id="reconnect-banner-{connection.pk}"' not in html
    assert "This connection needs to be reconnected." not in html


def test_failing_refresh_says_when_it_tries_again(alice: User, make_connection: ConnectionFactory) -> None:
    make_connection(
        alice,
        status=ConnectionStatus.REFRESH_FAILING,
        status_reason="transient",
        status_message="Atlassian answered HTTP 503.",
        next_attempt_at=datetime(2025, 3, 2, 11, 0, tzinfo=UTC),
    )

    html = _page(alice)

    assert "(next try 2025-03-02 11:00 UTC)" in html
    assert "Atlassian answered HTTP 503." in html
    assert "Failing (retrying) <span" in html


def test_the_page_never_holds_a_token(alice: User, make_connection: ConnectionFactory) -> None:
    connections = [make_connection(alice), make_connection(alice, status=ConnectionStatus.NEEDS_RECONNECT)]

    html = _page(alice)

    for connection in connections:
        assert f'id="connection-{connection.pk}"' in html
        assert_no_secrets(html, *tokens_of(connection))


def test_nobody_sees_anothers_connection(alice: User, bob: User, make_connection: ConnectionFactory) -> None:
    mine = make_connection(alice, account_name="Alice Work")
    theirs = make_connection(
        bob, account_name="Bob Secret", sites=[("cloud-bob", "https://bob-only.atlassian.net", "Bob Only")]
    )

    html = _page(alice)

    assert f'id="connection-{mine.pk}"' in html
    assert f'id="connection-{theirs.pk}"' not in html
    assert "Bob Secret" not in html
    assert "bob-only.atlassian.net" not in html
    assert "Bob Secret" in _page(bob)


def test_without_connections_the_page_offers_to_connect(alice: User) -> None:
    html = _page(alice)

    assert "Connect your Jira Cloud account to see your issues here." in html
    assert '<button type="submit" id="connect-jira">Connect Jira</button>' in html


@override_settings(ATLASSIAN_CLIENT_ID="")
def test_without_an_atlassian_app_the_page_says_jira_is_not_configured(alice: User) -> None:
    html = _page(alice)

    assert "Jira is not configured on this portal" in html
    assert 'id="connect-jira"' not in html
    assert "Connect your Jira Cloud account" not in html


@override_settings(ATLASSIAN_CLIENT_ID="")
def test_without_an_atlassian_app_stored_connections_can_still_be_disconnected(
    alice: User, make_connection: ConnectionFactory
) -> None:
    # The operator removed the app: users must still be able to delete their tokens.
    connection = make_connection(alice)

    html = _page(alice)

    assert "Jira is not configured on this portal" in html
    assert f'href="/integrations/jira/connections/{connection.pk}/disconnect/"' in html


def test_the_settings_page_needs_a_login(db: None) -> None:
    response = Client().get("/settings/")

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/settings/"
