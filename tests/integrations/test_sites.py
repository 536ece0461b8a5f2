"""Show or hide one of a connection's sites in My Jira."""

from __future__ import annotations

from django.test import Client

from accounts.models import User
from integrations.models import Actor, ConnectionEvent, EventKind, JiraSite
from tests.support.accounts import logged_in
from tests.support.connections import ConnectionFactory


def _url(site: JiraSite) -> str:
    return f"/integrations/jira/sites/{site.pk}/enabled/"


def _site(user: User, make_connection: ConnectionFactory) -> JiraSite:
    connection = make_connection(user, sites=[("cloud-x", "https://x.atlassian.net", "Xylo")])
    return connection.sites.get()


def test_hide_then_show_a_site(alice: User, make_connection: ConnectionFactory) -> None:
    site = _site(alice, make_connection)
    client = logged_in(alice)

    hidden = client.post(_url(site), {"enabled": "0"}, follow=True)

    site.refresh_from_db()
    assert site.enabled is False
    assert "Xylo is now hidden in My Jira." in hidden.content.decode()
    assert '<button type="submit" class="secondary">Show</button>' in hidden.content.decode()

    shown = client.post(_url(site), {"enabled": "1"}, follow=True)

    site.refresh_from_db()
    assert site.enabled is True
    assert "Xylo is now shown in My Jira." in shown.content.decode()
    events = list(ConnectionEvent.objects.order_by("pk"))
    assert [(e.kind, e.detail["enabled"], e.actor, e.actor_user_id) for e in events] == [
        (EventKind.SITE_TOGGLED, False, Actor.USER, alice.pk),
        (EventKind.SITE_TOGGLED, True, Actor.USER, alice.pk),
    ]


def test_setting_the_current_value_again_records_nothing(alice: User, make_connection: ConnectionFactory) -> None:
    site = _site(alice, make_connection)

    assert logged_in(alice).post(_url(site), {"enabled": "1"}).status_code == 302

    assert ConnectionEvent.objects.count() == 0


def test_a_value_other_than_0_or_1_is_refused(alice: User, make_connection: ConnectionFactory) -> None:
    site = _site(alice, make_connection)
    client = logged_in(alice)

    for value in ("", "true", "2", "00"):
        assert client.post(_url(site), {"enabled": value}).status_code == 400
    assert client.post(_url(site)).status_code == 400

    site.refresh_from_db()
    assert site.enabled is True


def test_an_outsider_gets_404_and_changes_nothing(alice: User, bob: User, make_connection: ConnectionFactory) -> None:
    site = _site(alice, make_connection)

    response = logged_in(bob).post(_url(site), {"enabled": "0"})

    assert response.status_code == 404
    site.refresh_from_db()
    assert site.enabled is True
    assert ConnectionEvent.objects.count() == 0


def test_toggle_is_post_only_and_needs_a_login(alice: User, make_connection: ConnectionFactory) -> None:
    site = _site(alice, make_connection)

    assert logged_in(alice).get(_url(site), {"enabled": "0"}).status_code == 405
    anonymous = Client().post(_url(site), {"enabled": "0"})
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/accounts/login/")
    site.refresh_from_db()
    assert site.enabled is True


def test_toggle_needs_a_csrf_token(alice: User, make_connection: ConnectionFactory) -> None:
    site = _site(alice, make_connection)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    assert client.post(_url(site), {"enabled": "0"}).status_code == 403
    site.refresh_from_db()
    assert site.enabled is True
