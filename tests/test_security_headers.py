"""Every answer carries a strict Content-Security-Policy and a Permissions-Policy."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from accounts.models import User
from tests.support.accounts import login_verified


def directives(response: Any) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    parsed: dict[str, list[str]] = {}
    for part in header.split(";"):
        name, *sources = part.split()
        parsed[name] = sources
    return parsed


@pytest.mark.parametrize("url", ["/accounts/login/", "/accounts/signup/", "/accounts/password_reset/", "/admin/login/"])
@pytest.mark.django_db
def test_pages_forbid_inline_script_framing_and_plugins(client: Client, url: str) -> None:
    policy = directives(client.get(url))

    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    # Connect posts here, then redirects to Atlassian's consent page.
    assert policy["form-action"] == ["'self'", "https://auth.atlassian.com"]
    # Avatars come from Atlassian's https CDNs; no plain http anywhere.
    assert policy["img-src"] == ["'self'", "https:", "data:"]


def test_admin_pages_carry_the_same_policy(client: Client, staff: User) -> None:
    login_verified(client, staff)

    policy = directives(client.get("/admin/integrations/jiraconnection/"))

    assert policy["script-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]


@pytest.mark.django_db
def test_the_local_sandbox_origin_is_allowed_for_its_avatars_and_consent_page(client: Client, settings: Any) -> None:
    settings.ATLASSIAN_AUTH_URL = "http://127.0.0.1:8001"
    settings.ATLASSIAN_API_URL = "http://127.0.0.1:8001"

    policy = directives(client.get("/accounts/login/"))

    assert policy["img-src"] == ["'self'", "https:", "data:", "http://127.0.0.1:8001"]
    assert policy["form-action"] == ["'self'", "http://127.0.0.1:8001"]


@pytest.mark.django_db
def test_powerful_browser_features_are_switched_off(client: Client) -> None:
    header = client.get("/accounts/login/")["Permissions-Policy"]

    features = dict(item.split("=", 1) for item in header.split(", "))
    for feature in ("camera", "microphone", "geolocation", "payment", "usb", "display-capture"):
        assert features[feature] == "()"
