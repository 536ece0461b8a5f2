"""Bearer-token APIs: accessible-resources, /me, Jira /myself and /search/jql."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.seed import ACME, ADA, ALAN, GLOBEX, GRACE, INITECH
from sandbox.testing import SandboxClient

UNAUTHORIZED = {"code": 401, "message": "Unauthorized"}
SCOPE_MISMATCH = {"code": 401, "message": "Unauthorized; scope does not match"}
MY_OPEN = "assignee = currentUser() AND statusCategory != Done ORDER BY updated DESC"


def jira(cloud_id: str, rest: str) -> str:
    return f"/ex/jira/{cloud_id}/rest/api/3/{rest}"


@pytest.fixture
def ada(client: SandboxClient) -> str:
    return str(client.connect(account_id=ADA)["access_token"])


def test_accessible_resources_lists_the_grants_sites(client: SandboxClient) -> None:
    token = client.connect(account_id=ALAN)["access_token"]
    answer = client.api("/oauth/token/accessible-resources", token)
    assert answer.status_code == 200
    sites = answer.json()
    assert [s["id"] for s in sites] == [ACME, GLOBEX]
    assert sites[0] == {
        "id": ACME,
        "name": "acme",
        "url": "https://acme.atlassian.net",
        "scopes": ["read:jira-work", "read:jira-user"],
        "avatarUrl": sites[0]["avatarUrl"],
    }
    assert client.counters()["requests"]["accessible_resources"] == 1


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer nope", "Basic abc"])
def test_bad_bearer_is_401(client: SandboxClient, header: str) -> None:
    answer = client.http.get(
        f"{client.base_url}/oauth/token/accessible-resources", headers={"Authorization": header}, timeout=5
    )
    assert (answer.status_code, answer.json()) == (401, UNAUTHORIZED)


def test_me_returns_the_profile(client: SandboxClient, ada: str) -> None:
    me = client.api("/me", ada).json()
    assert me == {
        "account_id": ADA,
        "email": "ada@example.com",
        "name": "Ada Lovelace",
        "picture": f"{client.base_url}/avatars/ada.svg",
        "account_status": "active",
        "nickname": "ada",
        "zoneinfo": "Europe/London",
        "locale": "en-GB",
        "extended_profile": me["extended_profile"],
    }


def test_me_without_read_me_is_scope_401(client: SandboxClient) -> None:
    token = client.connect(scope="read:jira-work offline_access")["access_token"]
    answer = client.api("/me", token)
    assert (answer.status_code, answer.json()) == (401, SCOPE_MISMATCH)


def test_myself_returns_the_jira_user(client: SandboxClient, ada: str) -> None:
    answer = client.api(jira(INITECH, "myself"), ada)
    assert answer.status_code == 200
    body = answer.json()
    assert body["accountId"] == ADA
    assert body["accountType"] == "atlassian"
    assert body["emailAddress"] == "ada@example.com"
    assert body["displayName"] == "Ada Lovelace"
    assert body["active"] is True
    assert set(body["avatarUrls"]) == {"48x48", "24x24", "16x16", "32x32"}
    assert body["self"].startswith(f"https://api.atlassian.com/ex/jira/{INITECH}/")


def test_myself_leaves_out_a_hidden_email(client: SandboxClient) -> None:
    token = client.connect(account_id=ALAN)["access_token"]
    body = client.api(jira(ACME, "myself"), token).json()
    assert body["accountId"] == ALAN
    assert "emailAddress" not in body


def test_myself_without_read_jira_user_is_scope_401(client: SandboxClient) -> None:
    token = client.connect(scope="read:jira-work read:me")["access_token"]
    answer = client.api(jira(ACME, "myself"), token)
    assert (answer.status_code, answer.json()) == (401, SCOPE_MISMATCH)


def test_site_outside_the_grant_is_404(client: SandboxClient) -> None:
    token = client.connect(account_id=GRACE)["access_token"]
    assert client.api(jira(ACME, "myself"), token).status_code == 200
    for cloud_id in (GLOBEX, "00000000-0000-0000-0000-000000000000"):
        answer = client.api(jira(cloud_id, "myself"), token)
        assert (answer.status_code, answer.json()) == (404, {"errorMessages": ["Site not found"]})


def _search(client: SandboxClient, token: str, cloud_id: str, *, post: bool = False, **params: Any) -> Any:
    if post:
        answer = client.api(jira(cloud_id, "search/jql"), token, method="POST", json=params)
    else:
        answer = client.api(jira(cloud_id, "search/jql"), token, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.mark.parametrize("post", [False, True])
def test_search_pages_through_my_open_issues(client: SandboxClient, ada: str, post: bool) -> None:
    fields: Any = ["summary", "status", "updated"] if post else "summary,status,updated"
    pages, token = [], None
    while True:
        params: dict[str, Any] = {"jql": MY_OPEN, "fields": fields, "maxResults": 20}
        if token:
            params["nextPageToken"] = token
        page = _search(client, ada, GLOBEX, post=post, **params)
        assert "total" not in page
        pages.append(page)
        if page["isLast"]:
            assert "nextPageToken" not in page
            break
        token = page["nextPageToken"]
    assert [len(p["issues"]) for p in pages] == [20, 2]
    issues = [i for p in pages for i in p["issues"]]
    assert len({i["key"] for i in issues}) == 22
    for issue in issues:
        assert set(issue) == {"id", "key", "self", "fields"}
        assert set(issue["fields"]) == {"summary", "status", "updated"}
        assert issue["fields"]["status"]["statusCategory"]["key"] in ("new", "indeterminate")
        assert issue["key"].startswith("GLX-")
    updated = [i["fields"]["updated"] for i in issues]
    assert updated == sorted(updated, reverse=True)
    assert updated[0].endswith(".000+0000")
    assert client.counters()["requests"]["search"] == 2


def test_search_without_fields_returns_only_ids(client: SandboxClient, ada: str) -> None:
    page = _search(client, ada, ACME, jql=MY_OPEN)
    assert len(page["issues"]) == 22  # default maxResults 50
    assert all(set(i) == {"id"} for i in page["issues"])
    assert page["isLast"] is True


def test_search_filters_by_current_user(client: SandboxClient) -> None:
    token = client.connect(account_id=GRACE)["access_token"]
    page = _search(client, token, ACME, jql="assignee = currentUser()", fields="assignee")
    assert page["issues"]
    assert {i["fields"]["assignee"]["accountId"] for i in page["issues"]} == {GRACE}


def test_search_done_and_unknown_clauses(client: SandboxClient, ada: str) -> None:
    done = _search(client, ada, ACME, jql="assignee = currentUser() AND statusCategory = Done", fields="status")
    assert len(done["issues"]) == 5
    assert {i["fields"]["status"]["name"] for i in done["issues"]} == {"Done"}
    answer = client.api(
        jira(ACME, "search/jql"), ada, params={"jql": "assignee = currentUser() AND sprint in openSprints()"}
    )
    assert len(answer.json()["issues"]) == 27
    assert "openSprints" in answer.headers["X-Sandbox-Jql-Ignored"]


def test_search_in_lists_match_any_of_their_values(client: SandboxClient, ada: str) -> None:
    page = _search(client, ada, ACME, jql='project = ACME AND status in ("To Do", Done)', fields="status")
    names = {i["fields"]["status"]["name"] for i in page["issues"]}
    assert names == {"To Do", "Done"}
    keys = _search(client, ada, ACME, jql="issueKey in (ACME-1, ACME-2) AND issuetype != Epic")["issues"]
    assert [i["id"] for i in keys] == ["10001", "10002"]


def test_search_caps_max_results_at_100(client: SandboxClient, ada: str) -> None:
    page = _search(client, ada, ACME, jql="project = ACME", maxResults=500)
    assert len(page["issues"]) == 45
    assert page["isLast"] is True


def test_search_rejects_unbounded_jql(client: SandboxClient, ada: str) -> None:
    answer = client.api(jira(ACME, "search/jql"), ada, params={"jql": "ORDER BY updated DESC"})
    assert answer.status_code == 400
    assert "Unbounded" in answer.json()["errorMessages"][0]


def test_search_rejects_a_foreign_page_token(client: SandboxClient, ada: str) -> None:
    first = _search(client, ada, ACME, jql=MY_OPEN, maxResults=5)
    answer = client.api(
        jira(ACME, "search/jql"),
        ada,
        params={"jql": "project = ACME", "nextPageToken": first["nextPageToken"]},
    )
    assert answer.status_code == 400


def test_search_without_read_jira_work_is_scope_401(client: SandboxClient) -> None:
    token = client.connect(scope="read:jira-user read:me")["access_token"]
    answer = client.api(jira(ACME, "search/jql"), token, params={"jql": MY_OPEN})
    assert (answer.status_code, answer.json()) == (401, SCOPE_MISMATCH)


def test_old_search_endpoint_is_gone(client: SandboxClient, ada: str) -> None:
    answer = client.api(jira(ACME, "search"), ada, params={"jql": MY_OPEN})
    assert answer.status_code == 410
    assert "search/jql" in answer.json()["errorMessages"][0]


def test_revoked_grant_gets_401_on_jira(client: SandboxClient, ada: str) -> None:
    client.control("revoke", {"account_id": ADA})
    answer = client.api(jira(ACME, "myself"), ada)
    assert (answer.status_code, answer.json()) == (401, UNAUTHORIZED)
