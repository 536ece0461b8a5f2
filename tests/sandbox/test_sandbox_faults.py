"""Fault injection: each kind, latency, reproducibility, and lost responses after a rotation."""

from __future__ import annotations

import time

import pytest
import requests

from sandbox.seed import ADA
from sandbox.server import Sandbox
from sandbox.testing import SandboxClient


def test_500_is_json_and_refresh_not_processed(client: SandboxClient, sb: Sandbox) -> None:
    tokens = client.connect()
    client.faults({"token": {"kinds": ["500"]}})
    answer = client.refresh(tokens["refresh_token"])
    assert answer.status_code == 500
    assert answer.json() == {"code": 500, "message": "Internal Server Error"}
    assert sb.state.refresh_tokens[tokens["refresh_token"]].spent_at is None
    client.faults({})
    assert client.refresh(tokens["refresh_token"]).status_code == 200


def test_503_is_an_html_gateway_page(client: SandboxClient) -> None:
    client.faults({"me": {"kinds": ["503"]}})
    answer = client.api("/me", "whatever")
    assert answer.status_code == 503
    assert answer.headers["Content-Type"].startswith("text/html")


def test_429_carries_retry_after(client: SandboxClient) -> None:
    client.faults({"search": {"kinds": ["429"], "retry_after": 7}})
    answer = client.api("/ex/jira/x/rest/api/3/search/jql", "whatever")
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "7"
    assert answer.headers["X-RateLimit-Remaining"] == "0"
    assert "X-RateLimit-Reset" in answer.headers


def test_malformed_is_200_without_json(client: SandboxClient) -> None:
    tokens = client.connect()
    client.faults({"token": {"kinds": ["malformed"]}})
    answer = client.refresh(tokens["refresh_token"])
    assert answer.status_code == 200
    with pytest.raises(requests.JSONDecodeError):
        answer.json()


def test_timeout_hangs_until_the_client_gives_up(client: SandboxClient) -> None:
    client.faults({"accessible_resources": {"kinds": ["timeout"], "hang_seconds": 1}})
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        client.api("/oauth/token/accessible-resources", "whatever", timeout=0.3)
    assert time.monotonic() - started < 0.9


def test_timeout_closes_without_answer(client: SandboxClient) -> None:
    client.faults({"me": {"kinds": ["timeout"], "hang_seconds": 0.2}})
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{client.base_url}/me", timeout=3)


def test_lost_response_rotates_and_leeway_retry_succeeds(client: SandboxClient, sb: Sandbox) -> None:
    tokens = client.connect()
    client.faults({"token": {"kinds": ["lost_response"], "count": 1}})
    with pytest.raises(requests.ConnectionError):
        client.refresh(tokens["refresh_token"])
    # The server rotated before the connection dropped: the sent token is spent.
    assert sb.state.refresh_tokens[tokens["refresh_token"]].spent_at is not None
    retry = client.refresh(tokens["refresh_token"])
    assert retry.status_code == 200
    counters = client.counters()
    assert counters["leeway_reuses"] == 1
    assert counters["faults_injected"] == 1
    assert counters["reuse_detections"] == 0
    assert sb.state.refresh_count_by_account[ADA] == 2


def test_lost_response_with_leeway_zero_loses_the_grant(client: SandboxClient) -> None:
    client.configure(leeway=0)
    tokens = client.connect()
    client.faults({"token": {"kinds": ["lost_response"], "count": 1}})
    with pytest.raises(requests.ConnectionError):
        client.refresh(tokens["refresh_token"])
    assert client.refresh(tokens["refresh_token"]).status_code == 403
    assert client.counters()["grants_revoked"] == 1


def test_latency_is_injected(client: SandboxClient) -> None:
    token = client.connect()["access_token"]
    client.faults({"me": {"latency_ms": 200}})
    started = time.monotonic()
    assert client.api("/me", token).status_code == 200
    assert time.monotonic() - started >= 0.19
    assert client.counters()["faults_injected"] == 0


def test_latency_does_not_serialise_requests(client: SandboxClient) -> None:
    client.faults({"*": {"latency_ms": 300}})
    from concurrent.futures import ThreadPoolExecutor

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: requests.get(f"{client.base_url}/me", timeout=5).status_code, range(8)))
    assert codes == [401] * 8
    assert time.monotonic() - started < 1.0


def test_star_applies_to_every_endpoint_and_count_limits(client: SandboxClient) -> None:
    client.faults({"*": {"kinds": ["503"], "count": 2}})
    assert requests.get(f"{client.base_url}/me", timeout=5).status_code == 503
    assert requests.get(client.authorize_url(), timeout=5).status_code == 503
    assert requests.get(client.authorize_url(), timeout=5).status_code == 200
    assert client.counters()["faults_injected"] == 2


def test_an_endpoints_own_spec_beats_star(client: SandboxClient) -> None:
    client.faults({"*": {"kinds": ["503"]}, "me": {"kinds": ["429"], "retry_after": 4}, "token": {"latency_ms": 1}})
    assert requests.get(f"{client.base_url}/me", timeout=5).status_code == 429
    # A spec without kinds still replaces `*`: the token endpoint answers for real.
    assert client.token({"grant_type": "refresh_token", "refresh_token": "unknown"}).status_code == 403
    assert requests.get(client.authorize_url(), timeout=5).status_code == 503
    assert client.counters()["faults_by_kind"] == {
        "500": 0,
        "503": 1,
        "429": 1,
        "timeout": 0,
        "malformed": 0,
        "lost_response": 0,
    }


def test_faults_are_counted_by_kind(client: SandboxClient) -> None:
    client.faults({"me": {"kinds": ["500", "503", "429", "malformed"]}, "seed": 7})
    statuses = [requests.get(f"{client.base_url}/me", timeout=5).status_code for _ in range(40)]
    by_kind = client.counters()["faults_by_kind"]
    assert by_kind["500"] == statuses.count(500) > 0
    assert by_kind["503"] == statuses.count(503) > 0
    assert by_kind["429"] == statuses.count(429) > 0
    assert by_kind["malformed"] == statuses.count(200) > 0
    assert sum(by_kind.values()) == client.counters()["faults_injected"] == 40
    client.control("reset", {})
    assert set(client.counters()["faults_by_kind"].values()) == {0}


def test_seeded_faults_are_reproducible(client: SandboxClient) -> None:
    def run() -> list[int]:
        client.faults({"seed": 42, "me": {"rate": 0.5, "kinds": ["500", "503", "429"]}})
        return [requests.get(f"{client.base_url}/me", timeout=5).status_code for _ in range(20)]

    first, second = run(), run()
    assert first == second
    assert {401, 500, 503, 429} & set(first) != {401}
    assert 401 in first


def test_rate_zero_never_faults(client: SandboxClient) -> None:
    client.faults({"me": {"rate": 0, "kinds": ["500"]}})
    assert all(requests.get(f"{client.base_url}/me", timeout=5).status_code == 401 for _ in range(10))


@pytest.mark.parametrize(
    "spec",
    [
        {"nowhere": {"kinds": ["500"]}},
        {"me": {"kinds": ["explode"]}},
        {"me": {"rate": 2}},
        {"me": {"latency": 5}},
        {"seed": "x"},
    ],
)
def test_bad_fault_specs_are_rejected(client: SandboxClient, spec: dict[str, object]) -> None:
    answer = requests.post(f"{client.base_url}/_sandbox/faults", json=spec, timeout=5)
    assert answer.status_code == 400
    assert client.control("faults") == {}
