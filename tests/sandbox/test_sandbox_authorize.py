"""GET/POST /authorize: the consent page, its validation, and the redirects back to the app."""

from __future__ import annotations

import pytest
import requests

from sandbox.seed import ALAN, GRACE
from sandbox.testing import SandboxClient, approve, consent_form_fields, query_of


def test_consent_page_shows_app_scopes_and_accounts(client: SandboxClient) -> None:
    page = requests.get(client.authorize_url(), timeout=5)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    text = page.text
    assert "jiraconnect (sandbox)" in text
    for scope in ("read:jira-work", "read:jira-user", "read:me", "offline_access"):
        assert f'data-scope="{scope}"' in text
    for name in ("Ada Lovelace", "Grace Hopper", "Alan Turing"):
        assert name in text
    assert 'name="account_id"' in text
    assert 'name="decision" value="accept"' in text
    assert ">Accept</button>" in text
    assert 'name="decision" value="decline"' in text
    assert ">Decline</button>" in text
    assert consent_form_fields(text) == client.authorize_params()


def test_consent_page_escapes_what_the_app_sent(client: SandboxClient) -> None:
    page = requests.get(client.authorize_url(state='"><script>alert(1)</script>'), timeout=5)
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.text
    assert consent_form_fields(page.text)["state"] == '"><script>alert(1)</script>'


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"client_id": "someone-else"}, "client_id"),
        ({"client_id": ""}, "client_id"),
        ({"redirect_uri": "https://evil.example/callback"}, "redirect_uri"),
        ({"redirect_uri": "http://127.0.0.1:8000/integrations/jira/callback"}, "redirect_uri"),
        ({"response_type": "token"}, "response_type"),
        ({"audience": "example.com"}, "audience"),
        ({"prompt": "none"}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"scope": ""}, "scope"),
        ({"scope": "read:jira-work delete:everything"}, "scope"),
    ],
)
def test_bad_authorize_request_gets_sandbox_error_page_not_redirect(
    client: SandboxClient, override: dict[str, str], message: str
) -> None:
    answer = requests.get(client.authorize_url(**override), allow_redirects=False, timeout=5)
    assert answer.status_code == 400
    assert "Location" not in answer.headers
    assert answer.headers["Content-Type"].startswith("text/html")
    assert 'id="error-message"' in answer.text
    assert message in answer.text


def test_missing_prompt_is_accepted(client: SandboxClient) -> None:
    # Atlassian documents prompt=consent, not what it does without it: no refusal is invented.
    params = client.authorize_params()
    del params["prompt"]
    answer = requests.get(f"{client.base_url}/authorize", params=params, timeout=5)
    assert answer.status_code == 200


def test_forged_post_with_bad_prompt_is_refused(client: SandboxClient) -> None:
    form = {**client.authorize_params(prompt="none"), "decision": "accept", "account_id": GRACE}
    answer = requests.post(f"{client.base_url}/authorize", data=form, allow_redirects=False, timeout=5)
    assert answer.status_code == 400
    assert "Location" not in answer.headers
    assert "prompt" in answer.text


def test_forged_post_with_bad_redirect_uri_is_refused(client: SandboxClient) -> None:
    form = {**client.authorize_params(redirect_uri="https://evil.example/cb"), "decision": "accept"}
    answer = requests.post(f"{client.base_url}/authorize", data=form, allow_redirects=False, timeout=5)
    assert answer.status_code == 400
    assert "Location" not in answer.headers


def test_accept_redirects_with_code_and_state(client: SandboxClient) -> None:
    location = approve(client.http, client.authorize_url(state="s-42"), account_id=GRACE)
    assert location.startswith(client.config.redirect_uri + "?")
    params = query_of(location)
    assert set(params) == {"code", "state"}
    assert params["state"] == "s-42"
    assert len(params["code"]) >= 32


def test_decline_redirects_with_access_denied(client: SandboxClient) -> None:
    location = approve(client.http, client.authorize_url(state="s-43"), decision="decline")
    assert "error_description=User%20did%20not%20authorize%20the%20request" in location
    assert query_of(location) == {
        "error": "access_denied",
        "error_description": "User did not authorize the request",
        "state": "s-43",
    }


def test_accept_without_known_account_is_refused(client: SandboxClient) -> None:
    form = {**client.authorize_params(), "decision": "accept", "account_id": "557058:nobody"}
    answer = requests.post(f"{client.base_url}/authorize", data=form, allow_redirects=False, timeout=5)
    assert answer.status_code == 400


def test_code_is_bound_to_the_chosen_account(client: SandboxClient) -> None:
    tokens = client.connect(account_id=ALAN)
    me = client.api("/me", tokens["access_token"]).json()
    assert me["account_id"] == ALAN
    assert me["name"] == "Alan Turing"
