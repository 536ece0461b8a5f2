"""Disconnect: a confirmation page, then a POST that deletes tokens and sites, not the trail."""

from __future__ import annotations

from django.test import Client

from accounts.models import User
from integrations.models import Actor, ConnectionEvent, EventKind, JiraConnection, JiraSite
from tests.support.accounts import logged_in
from tests.support.connections import ConnectionFactory, tokens_of
from tests.support.secrets import assert_no_secrets

CONNECTED_APPS_URL = "https://id.atlassian.com/manage-profile/apps"


def _url(connection: JiraConnection) -> str:
    return f"/integrations/jira/connections/{connection.pk}/disconnect/"


def test_get_asks_for_confirmation_and_changes_nothing(alice: User, make_connection: ConnectionFactory) -> None:
    connection = make_connection(alice, account_name="Alice Work", account_email="alice@work.example")

    response = logged_in(alice).get(_url(connection))

    assert response.status_code == 200
    html = response.content.decode()
    assert "Disconnect Alice Work?" in html
    assert "alice@work.example" in html
    assert f'href="{CONNECTED_APPS_URL}"' in html
    assert '<form method="post">' in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert_no_secrets(html, *tokens_of(connection))
    assert JiraConnection.objects.filter(pk=connection.pk).exists()
    assert ConnectionEvent.objects.count() == 0


def test_post_deletes_connection_and_sites_but_keeps_the_events(
    alice: User, make_connection: ConnectionFactory
) -> None:
    connection = make_connection(alice, account_name="Alice Work")
    other = make_connection(alice)
    client = logged_in(alice)
    # An earlier event of this connection must survive it too.
    assert (
        client.post(f"/integrations/jira/sites/{connection.sites.get().pk}/enabled/", {"enabled": "0"}).status_code
        == 302
    )

    response = client.post(_url(connection))

    assert response.status_code == 302
    assert response["Location"] == "/settings/"
    assert not JiraConnection.objects.filter(pk=connection.pk).exists()
    assert not JiraSite.objects.filter(connection_id=connection.pk).exists()
    assert JiraConnection.objects.filter(pk=other.pk).exists()
    assert other.sites.count() == 1
    events = list(ConnectionEvent.objects.order_by("pk"))
    assert [e.kind for e in events] == [EventKind.SITE_TOGGLED, EventKind.DISCONNECTED]
    assert all(e.connection_id is None for e in events)
    assert all(e.account_id == connection.account_id for e in events)
    assert all(e.user_id == alice.pk for e in events)
    assert (events[1].actor, events[1].actor_user_id) == (Actor.USER, alice.pk)


def test_after_disconnect_the_user_is_pointed_to_atlassians_connected_apps(
    alice: User, make_connection: ConnectionFactory
) -> None:
    connection = make_connection(alice, account_name="Alice Work")

    response = logged_in(alice).post(_url(connection), follow=True)

    html = response.content.decode()
    assert "Disconnected Alice Work: its tokens are deleted from this portal." in html
    assert f'<a href="{CONNECTED_APPS_URL}"' in html
    # The message itself links there (messages are plain text; this link is ours).
    message = html.split('<ul class="messages"', 1)[1].split("</ul>", 1)[0]
    assert f'<a href="{CONNECTED_APPS_URL}" rel="noopener noreferrer">{CONNECTED_APPS_URL}</a>' in message
    assert f'id="connection-{connection.pk}"' not in html


def test_an_outsider_gets_404_and_deletes_nothing(alice: User, bob: User, make_connection: ConnectionFactory) -> None:
    connection = make_connection(alice)
    client = logged_in(bob)

    assert client.get(_url(connection)).status_code == 404
    assert client.post(_url(connection)).status_code == 404

    assert JiraConnection.objects.filter(pk=connection.pk).exists()
    assert ConnectionEvent.objects.count() == 0


def test_an_unknown_connection_is_404(alice: User) -> None:
    assert logged_in(alice).post("/integrations/jira/connections/999999/disconnect/").status_code == 404


def test_anonymous_disconnect_goes_to_login(alice: User, make_connection: ConnectionFactory) -> None:
    connection = make_connection(alice)

    response = Client().post(_url(connection))

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")
    assert JiraConnection.objects.filter(pk=connection.pk).exists()


def test_disconnect_needs_a_csrf_token(alice: User, make_connection: ConnectionFactory) -> None:
    connection = make_connection(alice)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    assert client.post(_url(connection)).status_code == 403
    assert JiraConnection.objects.filter(pk=connection.pk).exists()


def test_disconnect_refuses_other_methods(alice: User, make_connection: ConnectionFactory) -> None:
    connection = make_connection(alice)
    client = logged_in(alice)

    assert client.delete(_url(connection)).status_code == 405
    assert client.put(_url(connection)).status_code == 405
    assert JiraConnection.objects.filter(pk=connection.pk).exists()
