"""The issue controls: the /_sandbox/issues page and its JSON twins change what Jira returns."""

from __future__ import annotations

import re

import pytest

from sandbox.seed import ACME, ADA, ALAN, GRACE
from sandbox.testing import SandboxClient, change_issue, comment_on_issue


def search(client: SandboxClient, token: str, jql: str) -> list[dict[str, object]]:
    answer = client.api(
        f"/ex/jira/{ACME}/rest/api/3/search/jql", token, params={"jql": jql, "fields": "summary,status,assignee"}
    )
    assert answer.status_code == 200, answer.text
    issues: list[dict[str, object]] = answer.json()["issues"]
    return issues


def test_a_change_shows_in_search_results(client: SandboxClient) -> None:
    token = client.connect(account_id=GRACE)["access_token"]
    before = {i["key"] for i in search(client, token, "assignee = currentUser()")}
    assert "ACME-1" not in before
    changed = change_issue(client, "ACME-1", summary="Now Grace's", status="In Review", assignee=GRACE)
    assert changed["fields"]["summary"] == "Now Grace's"
    [issue] = [i for i in search(client, token, "assignee = currentUser()") if i["key"] == "ACME-1"]
    fields = issue["fields"]
    assert isinstance(fields, dict)
    assert fields["summary"] == "Now Grace's"
    assert fields["status"]["name"] == "In Review"
    assert fields["assignee"]["accountId"] == GRACE
    # The change moved `updated` to now: it sorts first.
    newest = client.api(
        f"/ex/jira/{ACME}/rest/api/3/search/jql", token, params={"jql": "project = ACME ORDER BY updated DESC"}
    ).json()["issues"][0]
    assert newest["id"] == changed["id"]


def test_unassigning_and_comments_show_in_the_issue_view(client: SandboxClient) -> None:
    change_issue(client, "ACME-1", assignee=None)
    comment_on_issue(client, "ACME-1", "First!", actor=ALAN)
    view = client.http.get(f"{client.base_url}/_sandbox/issues/ACME-1", timeout=5).json()
    assert view["fields"]["assignee"] is None
    assert [(c["body"], c["author"]["accountId"]) for c in view["comments"]] == [("First!", ALAN)]


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        ("ACME-1", {"status": "Blocked"}, 400, "status must be one of: To Do, In Progress, In Review, Done."),
        ("ACME-1", {"summary": " "}, 400, "summary must be 1 to 255 characters."),
        ("ACME-1", {"priority": "High"}, 400, "Unknown fields: priority."),
        ("GLX-1", {"assignee": GRACE}, 400, "User '557058:grace-0002' cannot be assigned issues on globex."),
        ("GLX-1", {"summary": "x", "actor": GRACE}, 400, "actor must be an account with access to globex."),
        ("ACME-999", {"summary": "x"}, 404, "Issue ACME-999 does not exist."),
        ("ACME-1/comments", {"body": ""}, 400, "Comment body can not be empty!"),
    ],
)
def test_bad_changes_are_refused_and_change_nothing(
    client: SandboxClient, path: str, body: dict[str, object], status: int, error: str
) -> None:
    key = path.split("/")[0]
    before = client.http.get(f"{client.base_url}/_sandbox/issues/{key}", timeout=5)
    answer = client.http.post(f"{client.base_url}/_sandbox/issues/{path}", json={"summary": "ok", **body}, timeout=5)
    assert (answer.status_code, answer.json()) == (status, {"error": error})
    after = client.http.get(f"{client.base_url}/_sandbox/issues/{key}", timeout=5)
    assert after.content == before.content


def test_the_page_lists_a_sites_issues_with_forms_and_no_script(client: SandboxClient) -> None:
    page = client.http.get(f"{client.base_url}/_sandbox/issues?site=globex", timeout=5)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    html = page.text
    assert "<script" not in html
    assert len(re.findall(r'<tr id="GLX-\d+">', html)) == 45
    assert 'action="/_sandbox/issues/GLX-1"' in html
    assert 'action="/_sandbox/issues/GLX-1/comments"' in html
    assert "ACME-1" not in html
    # Only people who can reach the site are offered as assignees.
    assert "Grace Hopper" not in html
    assert "Alan Turing" in html


def test_the_page_forms_change_an_issue_and_come_back(client: SandboxClient) -> None:
    answer = client.http.post(
        f"{client.base_url}/_sandbox/issues/ACME-2",
        data={"summary": "Changed in the page", "status": "Done", "assignee": "", "actor": ADA},
        allow_redirects=False,
        timeout=5,
    )
    assert (answer.status_code, answer.headers["Location"]) == (303, "/_sandbox/issues?site=acme#ACME-2")
    client.http.post(f"{client.base_url}/_sandbox/issues/ACME-2/comments", data={"body": "From the page"}, timeout=5)
    view = client.http.get(f"{client.base_url}/_sandbox/issues/ACME-2", timeout=5).json()
    assert view["fields"]["summary"] == "Changed in the page"
    assert view["fields"]["status"]["name"] == "Done"
    assert view["fields"]["assignee"] is None
    assert view["comments"][0]["body"] == "From the page"
    page = client.http.get(f"{client.base_url}/_sandbox/issues?site=acme", timeout=5).text
    assert 'value="Changed in the page"' in page


def test_a_bad_form_gets_an_error_page(client: SandboxClient) -> None:
    answer = client.http.post(
        f"{client.base_url}/_sandbox/issues/ACME-2", data={"summary": "", "status": "Done"}, timeout=5
    )
    assert answer.status_code == 400
    assert "summary must be 1 to 255 characters." in answer.text


def test_reset_restores_the_seeded_issues(client: SandboxClient) -> None:
    seeded = client.http.get(f"{client.base_url}/_sandbox/issues/ACME-3", timeout=5).json()
    change_issue(client, "ACME-3", summary="Temporary")
    comment_on_issue(client, "ACME-3", "Temporary too")
    client.control("reset", {})
    assert client.http.get(f"{client.base_url}/_sandbox/issues/ACME-3", timeout=5).json() == seeded
