"""GET /avatars/<name>.svg, and the profile URLs that point at it on the sandbox's origin."""

from __future__ import annotations

import re
import socket

import pytest

from sandbox.seed import ACME, ADA, ALAN, GRACE
from sandbox.server import Sandbox
from sandbox.testing import SandboxClient

SIZES = ("48x48", "24x24", "16x16", "32x32")


def _fill(svg: str) -> str:
    match = re.search(r'<circle [^>]*fill="([^"]+)"', svg)
    assert match, svg
    return match[1]


def _raw_get(sb: Sandbox, path: str, host: str) -> bytes:
    """GET with a Host header of our choosing (requests would send the URL's own)."""
    with socket.create_connection((sb.host, sb.port), timeout=5) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode("latin-1"))
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_me_picture_is_an_svg_the_sandbox_serves(client: SandboxClient) -> None:
    token = client.connect(account_id=ADA)["access_token"]
    picture = client.api("/me", token).json()["picture"]
    assert picture == f"{client.base_url}/avatars/ada.svg"

    answer = client.http.get(picture, timeout=5)

    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "image/svg+xml"
    assert answer.headers["Cache-Control"] == "public, max-age=86400"
    assert answer.text.startswith('<svg xmlns="http://www.w3.org/2000/svg"')
    assert re.search(r">AL</text>", answer.text)


def test_each_user_has_a_colour_of_their_own_that_never_changes(client: SandboxClient) -> None:
    svgs = {name: client.http.get(f"{client.base_url}/avatars/{name}.svg", timeout=5).text for name in ("ada", "grace")}
    again = client.http.get(f"{client.base_url}/avatars/ada.svg", timeout=5).text

    assert again == svgs["ada"]
    assert _fill(svgs["ada"]) != _fill(svgs["grace"])
    assert ">GH</text>" in svgs["grace"]


def test_myself_avatar_urls_point_at_the_same_image(client: SandboxClient) -> None:
    token = client.connect(account_id=ALAN)["access_token"]
    urls = client.api(f"/ex/jira/{ACME}/rest/api/3/myself", token).json()["avatarUrls"]

    assert urls == {size: f"{client.base_url}/avatars/alan.svg?s={size.split('x')[0]}" for size in SIZES}
    assert client.http.get(urls["48x48"], timeout=5).headers["Content-Type"] == "image/svg+xml"


def test_issue_people_carry_avatars_on_the_sandbox_origin(client: SandboxClient) -> None:
    token = client.connect(account_id=GRACE)["access_token"]
    answer = client.api(
        f"/ex/jira/{ACME}/rest/api/3/search/jql",
        token,
        params={"jql": "assignee = currentUser()", "fields": "assignee,reporter"},
    )
    issue = answer.json()["issues"][0]["fields"]

    assert issue["assignee"]["avatarUrls"]["48x48"] == f"{client.base_url}/avatars/grace.svg?s=48"
    assert issue["reporter"]["avatarUrls"]["48x48"] == f"{client.base_url}/avatars/ada.svg?s=48"


def test_synthetic_bench_accounts_get_an_avatar_too(client: SandboxClient) -> None:
    minted = client.control("grants", {"account_id": ADA, "scopes": "read:me", "count": 2})
    picture = client.api("/me", minted[1]["access_token"]).json()["picture"]

    assert picture == f"{client.base_url}/avatars/bench-000002.svg"
    assert client.http.get(picture, timeout=5).status_code == 200


@pytest.mark.parametrize("path", ["/avatars/nobody.svg", "/avatars/ada.png", "/avatars/ada", "/avatars/.svg"])
def test_unknown_avatars_are_404(client: SandboxClient, path: str) -> None:
    answer = client.http.get(f"{client.base_url}{path}", timeout=5)
    assert (answer.status_code, answer.json()) == (404, {"errorMessages": ["Not found"]})


def test_avatars_only_answer_get(client: SandboxClient) -> None:
    assert client.http.post(f"{client.base_url}/avatars/ada.svg", timeout=5).status_code == 405


def test_avatars_are_neither_counted_nor_faulted(client: SandboxClient) -> None:
    client.faults({"*": {"kinds": ["500"]}})

    assert client.http.get(f"{client.base_url}/avatars/ada.svg", timeout=5).status_code == 200
    assert client.counters()["faults_injected"] == 0


def test_urls_follow_the_host_the_client_called(sb: Sandbox) -> None:
    seed = _raw_get(sb, "/_sandbox/seed", f"localhost:{sb.port}")
    assert f'"picture":"http://localhost:{sb.port}/avatars/ada.svg"'.encode() in seed


@pytest.mark.parametrize("host", ["", "evil.example/x?", 'a"b'])
def test_an_odd_host_header_falls_back_to_the_bound_address(sb: Sandbox, host: str) -> None:
    seed = _raw_get(sb, "/_sandbox/seed", host)
    assert f'"picture":"{sb.url}/avatars/ada.svg"'.encode() in seed
