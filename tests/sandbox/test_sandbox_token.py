"""POST /oauth/token: code exchange, rotation, leeway, reuse detection and grant expiry."""

from __future__ import annotations

import requests

from sandbox.config import DAY
from sandbox.seed import ADA, GRACE
from sandbox.server import Sandbox
from sandbox.testing import SandboxClient

INVALID_CODE = {"error": "invalid_request", "error_description": "authorization_code is invalid"}
INVALID_GRANT = {"error": "invalid_grant", "error_description": "Unknown or invalid refresh token."}
UNAUTHORIZED_CLIENT = {"error": "unauthorized_client", "error_description": "refresh_token is invalid"}
UNAUTHORIZED = {"code": 401, "message": "Unauthorized"}


def test_code_exchange_returns_atlassian_token_shape(client: SandboxClient) -> None:
    answer = client.exchange(client.get_code())
    assert answer.status_code == 200
    body = answer.json()
    assert list(body) == ["access_token", "expires_in", "scope", "refresh_token", "token_type"]
    assert body["expires_in"] == 3600
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "read:jira-work read:jira-user read:me offline_access"
    # JWT-sized, like Atlassian's: storage must not assume short tokens.
    assert len(body["access_token"]) > 1000
    assert answer.headers["Cache-Control"] == "no-store"
    assert client.counters()["code_exchanges"] == 1


def test_code_exchange_accepts_form_encoding(client: SandboxClient) -> None:
    form = {
        "grant_type": "authorization_code",
        "client_id": client.config.client_id,
        "client_secret": client.config.client_secret,
        "code": client.get_code(),
        "redirect_uri": client.config.redirect_uri,
    }
    answer = requests.post(f"{client.base_url}/oauth/token", data=form, timeout=5)
    assert answer.status_code == 200
    assert "access_token" in answer.json()


def test_code_is_single_use(client: SandboxClient) -> None:
    code = client.get_code()
    assert client.exchange(code).status_code == 200
    again = client.exchange(code)
    assert again.status_code == 400
    assert again.json() == INVALID_CODE


def test_unknown_code_is_invalid(client: SandboxClient) -> None:
    answer = client.exchange("not-a-code")
    assert (answer.status_code, answer.json()) == (400, INVALID_CODE)


def test_code_expires_after_ten_minutes(client: SandboxClient) -> None:
    fresh, stale = client.get_code(), client.get_code()
    client.advance(590)
    assert client.exchange(fresh).status_code == 200
    client.advance(11)
    answer = client.exchange(stale)
    assert (answer.status_code, answer.json()) == (400, INVALID_CODE)


def test_code_exchange_with_other_redirect_uri_is_invalid_request(client: SandboxClient) -> None:
    answer = client.exchange(client.get_code(), redirect_uri="http://127.0.0.1:8000/other/")
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request"


def test_wrong_client_secret_is_401_access_denied(client: SandboxClient) -> None:
    code = client.get_code()
    answer = client.exchange(code, client_secret="wrong")
    assert answer.status_code == 401
    assert answer.json() == {"error": "access_denied", "error_description": "Unauthorized"}
    missing = client.exchange(code, client_secret="")
    assert missing.status_code == 401
    # The failed attempts did not burn the code.
    assert client.exchange(code).status_code == 200


def test_refresh_with_wrong_client_id_is_401(client: SandboxClient) -> None:
    tokens = client.connect()
    answer = client.token(
        {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": "other"}
    )
    assert answer.status_code == 401
    assert answer.json()["error"] == "access_denied"


def test_unsupported_grant_type(client: SandboxClient) -> None:
    answer = client.token({"grant_type": "password"})
    assert answer.status_code == 400
    assert answer.json()["error"] == "unsupported_grant_type"


def test_without_offline_access_no_refresh_token(client: SandboxClient) -> None:
    tokens = client.connect(scope="read:jira-work read:me")
    assert "refresh_token" not in tokens
    assert tokens["scope"] == "read:jira-work read:me"


def test_refresh_rotates_and_spends_the_old_token(client: SandboxClient, sb: Sandbox) -> None:
    client.configure(leeway=0)
    first = client.connect()
    second = client.refresh(first["refresh_token"]).json()
    third = client.refresh(second["refresh_token"]).json()
    tokens = {first["refresh_token"], second["refresh_token"], third["refresh_token"]}
    assert len(tokens) == 3
    assert len({first["access_token"], second["access_token"], third["access_token"]}) == 3
    assert list(second) == ["access_token", "expires_in", "scope", "refresh_token", "token_type"]
    assert sb.state.refresh_tokens[first["refresh_token"]].spent_at is not None
    assert sb.state.refresh_tokens[third["refresh_token"]].spent_at is None
    assert sb.state.refresh_count_by_account[ADA] == 2
    assert client.counters()["refreshes"] == 2


def test_leeway_reuse_is_accepted_within_window(client: SandboxClient, sb: Sandbox) -> None:
    first = client.connect()
    client.refresh(first["refresh_token"]).raise_for_status()
    client.advance(599)
    again = client.refresh(first["refresh_token"])
    assert again.status_code == 200
    assert again.json()["refresh_token"] != first["refresh_token"]
    counters = client.counters()
    assert counters["leeway_reuses"] == 1
    assert counters["reuse_detections"] == 0
    assert sb.state.leeway_reuses_by_account[ADA] == 1
    # The fresh pair works.
    assert client.refresh(again.json()["refresh_token"]).status_code == 200


def test_reuse_beyond_leeway_revokes_the_whole_grant(client: SandboxClient, sb: Sandbox) -> None:
    first = client.connect()
    second = client.refresh(first["refresh_token"]).json()
    client.advance(601)
    reuse = client.refresh(first["refresh_token"])
    assert (reuse.status_code, reuse.json()) == (403, INVALID_GRANT)
    # Everything issued under the grant is dead, including the newest pair.
    newest = client.refresh(second["refresh_token"])
    assert (newest.status_code, newest.json()) == (403, INVALID_GRANT)
    api = client.api("/oauth/token/accessible-resources", second["access_token"])
    assert (api.status_code, api.json()) == (401, UNAUTHORIZED)
    counters = client.counters()
    assert counters["reuse_detections"] == 1
    assert counters["grants_revoked"] == 1
    grant = sb.state.grant_for(ADA)
    assert grant is not None
    assert grant.revoked_reason == "reuse_detected"


def test_leeway_zero_makes_any_reuse_fatal(client: SandboxClient) -> None:
    client.configure(leeway=0)
    first = client.connect()
    second = client.refresh(first["refresh_token"]).json()
    reuse = client.refresh(first["refresh_token"])
    assert reuse.status_code == 403
    assert client.refresh(second["refresh_token"]).status_code == 403
    assert client.counters()["reuse_detections"] == 1


def test_unauthorized_client_style_for_dead_grants(client: SandboxClient) -> None:
    client.configure(leeway=0, unauthorized_client_style=True)
    first = client.connect()
    client.refresh(first["refresh_token"]).raise_for_status()
    reuse = client.refresh(first["refresh_token"])
    assert (reuse.status_code, reuse.json()) == (403, UNAUTHORIZED_CLIENT)
    unknown = client.refresh("never-issued")
    assert (unknown.status_code, unknown.json()) == (403, UNAUTHORIZED_CLIENT)


def test_unknown_refresh_token_is_invalid_grant(client: SandboxClient) -> None:
    answer = client.refresh("never-issued")
    assert (answer.status_code, answer.json()) == (403, INVALID_GRANT)


def test_revoke_control_kills_refresh_and_access(client: SandboxClient) -> None:
    tokens = client.connect(account_id=GRACE)
    assert client.control("revoke", {"account_id": GRACE}) == {"account_id": GRACE, "revoked": True}
    assert client.refresh(tokens["refresh_token"]).status_code == 403
    assert client.api("/me", tokens["access_token"]).status_code == 401
    counters = client.counters()
    assert counters["grants_revoked"] == 1
    assert counters["user_revocations"] == 1
    assert counters["reuse_detections"] == 0
    assert client.control("revoke", {"account_id": GRACE})["revoked"] is False


def test_refresh_token_expires_after_90_idle_days(client: SandboxClient) -> None:
    tokens = client.connect()
    client.advance(89 * 86_400)
    rotated = client.refresh(tokens["refresh_token"])
    assert rotated.status_code == 200
    client.advance(90 * 86_400)
    idle = client.refresh(rotated.json()["refresh_token"])
    assert (idle.status_code, idle.json()) == (403, INVALID_GRANT)


def test_grant_dies_365_days_after_consent_even_if_used(client: SandboxClient) -> None:
    refresh_token = client.connect()["refresh_token"]
    for _ in range(5):
        client.advance(72 * DAY)
        answer = client.refresh(refresh_token)
        assert answer.status_code == 200
        refresh_token = answer.json()["refresh_token"]
    client.advance(6 * DAY)  # 366 days after consent
    late = client.refresh(refresh_token)
    assert (late.status_code, late.json()) == (403, INVALID_GRANT)


def test_new_consent_replaces_the_previous_grant(client: SandboxClient, sb: Sandbox) -> None:
    old = client.connect()
    new = client.connect()
    assert client.refresh(old["refresh_token"]).status_code == 403
    assert client.api("/me", old["access_token"]).status_code == 401
    assert client.refresh(new["refresh_token"]).status_code == 200
    assert client.counters()["grants_replaced"] == 1
    assert client.counters()["grants_revoked"] == 0


def test_access_token_expires_after_ttl(client: SandboxClient) -> None:
    tokens = client.connect()
    client.advance(3599)
    assert client.api("/me", tokens["access_token"]).status_code == 200
    client.advance(2)
    expired = client.api("/me", tokens["access_token"])
    assert (expired.status_code, expired.json()) == (401, UNAUTHORIZED)


def test_access_ttl_is_configurable(client: SandboxClient) -> None:
    client.configure(access_ttl=60)
    assert client.connect()["expires_in"] == 60
