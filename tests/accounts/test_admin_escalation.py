"""Staff cannot raise their own powers, nor take over other staff accounts; the Support group."""

from __future__ import annotations

from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import Group, Permission
from django.test import Client

from accounts.models import User
from integrations.models import ConnectionStatus
from tests.support.accounts import login_verified
from tests.support.connections import ConnectionFactory

USERS = "/admin/accounts/user/"
GROUPS = "/admin/auth/group/"


def change_url(user: User) -> str:
    return f"{USERS}{user.pk}/change/"


def password_url(user: User) -> str:
    return f"{USERS}{user.pk}/password/"


def staff_member(email: str, *codenames: str) -> User:
    user = User.objects.create_user(email, "helpdesk horse battery staple", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


def change_form(user: User, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"email": user.email, "is_active": "on", "_save": "Save"}
    if user.is_staff:
        data["is_staff"] = "on"
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


@pytest.fixture
def helpdesk(db: None) -> User:
    return staff_member("helpdesk@example.com", "view_user", "change_user")


def test_staff_with_change_user_posting_is_superuser_to_their_own_page_stays_a_plain_staff_member(
    client: Client, helpdesk: User
) -> None:
    login_verified(client, helpdesk)
    every_permission = list(Permission.objects.values_list("pk", flat=True))
    support = Group.objects.get(name="Support")

    response = client.post(
        change_url(helpdesk),
        change_form(helpdesk, is_superuser="on", user_permissions=every_permission, groups=[support.pk]),
    )

    assert response.status_code == 302
    stored = User.objects.get(pk=helpdesk.pk)
    assert stored.is_superuser is False
    assert set(stored.user_permissions.values_list("codename", flat=True)) == {"view_user", "change_user"}
    assert not stored.groups.exists()


def test_staff_cannot_make_a_customer_staff_or_superuser(client: Client, helpdesk: User, alice: User) -> None:
    login_verified(client, helpdesk)

    response = client.post(change_url(alice), change_form(alice, is_staff="on", is_superuser="on"))

    assert response.status_code == 302
    stored = User.objects.get(pk=alice.pk)
    assert (stored.is_staff, stored.is_superuser) == (False, False)


def test_the_privilege_fields_show_read_only_to_staff(client: Client, helpdesk: User) -> None:
    login_verified(client, helpdesk)

    page = client.get(change_url(helpdesk)).content.decode()

    for field in ("is_staff", "is_superuser", "groups", "user_permissions"):
        assert f'name="{field}"' not in page
    assert 'name="email"' in page


def test_staff_cannot_change_another_staff_members_password_or_email(
    client: Client, helpdesk: User, staff: User
) -> None:
    login_verified(client, helpdesk)
    hash_before = staff.password

    assert client.get(password_url(staff)).status_code == 403
    assert (
        client.post(password_url(staff), {"password1": "Taken-Over-2026!", "password2": "Taken-Over-2026!"}).status_code
        == 403
    )
    assert client.post(change_url(staff), change_form(staff, email="helpdesk+owned@example.com")).status_code == 403
    assert client.post(f"{USERS}{staff.pk}/delete/", {"post": "yes"}).status_code == 403

    stored = User.objects.get(pk=staff.pk)
    assert stored.password == hash_before
    assert stored.email == "support@example.com"


def test_staff_with_change_user_still_help_customers(client: Client, helpdesk: User, alice: User) -> None:
    login_verified(client, helpdesk)

    response = client.post(
        password_url(alice),
        {"password1": "Fresh-Start-2026!", "password2": "Fresh-Start-2026!", "set_usable_password": "true"},
    )

    assert response.status_code == 302
    assert User.objects.get(pk=alice.pk).check_password("Fresh-Start-2026!")


def test_a_superuser_still_grants_and_changes_anything(client: Client, staff: User, helpdesk: User) -> None:
    login_verified(client, staff)

    client.post(change_url(helpdesk), change_form(helpdesk, is_superuser="on"))
    changed = client.post(
        password_url(helpdesk),
        {"password1": "Reset-By-Boss-2026!", "password2": "Reset-By-Boss-2026!", "set_usable_password": "true"},
    )

    stored = User.objects.get(pk=helpdesk.pk)
    assert stored.is_superuser is True
    assert changed.status_code == 302
    assert stored.check_password("Reset-By-Boss-2026!")


def test_only_superusers_change_groups(client: Client, db: None) -> None:
    groupie = staff_member("groupie@example.com", "view_group", "change_group", "add_group")
    login_verified(client, groupie)
    support = Group.objects.get(name="Support")
    before = set(support.permissions.all())

    response = client.post(
        f"{GROUPS}{support.pk}/change/",
        {"name": "Support", "permissions": list(Permission.objects.values_list("pk", flat=True))},
    )

    assert response.status_code == 403
    assert client.post(f"{GROUPS}add/", {"name": "Root"}).status_code == 403
    assert set(support.permissions.all()) == before
    assert not Group.objects.filter(name="Root").exists()


# --- The Support group ----------------------------------------------------------------------


@pytest.fixture
def supporter(db: None) -> User:
    user = User.objects.create_user("agent@example.com", "agent horse battery staple", is_staff=True)
    user.groups.add(Group.objects.get(name="Support"))
    return user


def test_the_support_group_holds_exactly_the_support_permissions(db: None) -> None:
    support = Group.objects.get(name="Support")

    assert sorted(support.permissions.values_list("content_type__app_label", "codename")) == [
        ("accounts", "view_user"),
        ("axes", "delete_accessattempt"),
        ("axes", "view_accessattempt"),
        ("integrations", "change_jiraconnection"),
        ("integrations", "view_connectionevent"),
        ("integrations", "view_jiraconnection"),
    ]


def test_support_can_look_up_users_and_act_on_connections_but_not_change_users(
    client: Client, supporter: User, alice: User, make_connection: ConnectionFactory
) -> None:
    connection = make_connection(alice)
    login_verified(client, supporter)

    assert client.get(f"{USERS}?q=alice").status_code == 200
    assert client.get(change_url(alice)).status_code == 200
    assert client.post(change_url(alice), change_form(alice, email="agent+alice@example.com")).status_code == 403
    assert client.get(password_url(alice)).status_code == 403
    assert User.objects.get(pk=alice.pk).email == "alice@example.com"

    acted = client.post(
        "/admin/integrations/jiraconnection/",
        {"action": "mark_needs_reconnect", "index": "0", "_selected_action": [str(connection.pk)]},
    )
    assert acted.status_code == 302
    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.NEEDS_RECONNECT
    assert client.get("/admin/integrations/connectionevent/").status_code == 200


def test_support_can_see_and_lift_a_lockout_but_not_read_login_history_or_devices(
    client: Client, supporter: User
) -> None:
    attempt = AccessAttempt.objects.create(
        username="alice@example.com", ip_address="203.0.113.7", user_agent="x", failures_since_start=10
    )
    login_verified(client, supporter)

    assert client.get("/admin/axes/accessattempt/").status_code == 200
    lifted = client.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert lifted.status_code == 302
    assert not AccessAttempt.objects.exists()
    for url in ("/admin/axes/accesslog/", "/admin/otp_totp/totpdevice/", "/admin/otp_static/staticdevice/", GROUPS):
        assert client.get(url).status_code == 403, url
