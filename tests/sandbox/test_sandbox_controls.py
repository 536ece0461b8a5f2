"""The /_sandbox/ controls, concurrency, and running as its own process."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from sandbox.config import CLIENT_SECRET
from sandbox.seed import ADA, GRACE
from sandbox.server import Sandbox, SandboxConfig
from sandbox.state import COUNTER_NAMES
from sandbox.testing import SandboxClient, SandboxProcess


def test_counters_shape(client: SandboxClient) -> None:
    counters = client.counters()
    assert set(counters["requests"]) >= {"authorize", "token", "accessible_resources", "me", "myself", "search"}
    # Every counter there and at zero, the ones the proofs read among them.
    assert {name: counters[name] for name in COUNTER_NAMES} == dict.fromkeys(COUNTER_NAMES, 0)
    assert {"refreshes", "reuse_detections", "leeway_reuses", "grants_revoked", "faults_injected"} <= set(COUNTER_NAMES)


def test_counters_count_requests_per_endpoint(client: SandboxClient) -> None:
    tokens = client.connect()
    client.refresh(tokens["refresh_token"])
    counters = client.counters()
    assert counters["requests"]["authorize"] == 2  # consent page + form post
    assert counters["requests"]["token"] == 2
    assert counters["code_exchanges"] == 1
    assert counters["refreshes"] == 1


def test_reset_clears_state_and_restores_config(client: SandboxClient, sb: Sandbox) -> None:
    tokens = client.connect()
    client.configure(leeway=0, access_ttl=5)
    client.faults({"me": {"kinds": ["500"]}})
    client.advance(1000)
    client.control("reset", {})
    assert client.counters()["code_exchanges"] == 0
    assert client.control("faults") == {}
    assert client.control("clock")["offset"] == 0
    assert client.control("config")["leeway"] == 600
    assert client.api("/me", tokens["access_token"]).status_code == 401
    assert sb.state.grant_for(ADA) is None


def test_config_rejects_bad_values(client: SandboxClient) -> None:
    for body in ({"leeway": "soon"}, {"port": 1}, {"nope": 1}, {"unauthorized_client_style": 1}):
        assert requests.post(f"{client.base_url}/_sandbox/config", json=body, timeout=5).status_code == 400
    config = client.control("config")
    assert "client_secret" not in config
    assert config["leeway"] == 600


def test_bulk_grants_mint_independent_token_pairs(client: SandboxClient, sb: Sandbox) -> None:
    started = time.monotonic()
    minted = client.control("grants", {"account_id": ADA, "count": 10_000})
    assert time.monotonic() - started < 2.0
    assert len(minted) == 10_000
    assert len({m["account_id"] for m in minted}) == 10_000
    assert minted[122]["account_id"] == "bench:000123"
    assert set(minted[0]) == {"account_id", "access_token", "refresh_token", "expires_in", "scope", "token_type"}
    refreshed = client.refresh(minted[5]["refresh_token"])
    assert refreshed.status_code == 200
    assert sb.state.refresh_count_by_account == {"bench:000006": 1}
    me = client.api("/me", minted[7]["access_token"]).json()
    assert me["account_id"] == "bench:000008"


def test_single_grant_reuses_the_given_account(client: SandboxClient) -> None:
    minted = client.control("grants", {"account_id": GRACE, "scopes": "read:jira-work"})
    assert [m["account_id"] for m in minted] == [GRACE]
    assert "refresh_token" not in minted[0]
    sites = client.api("/oauth/token/accessible-resources", minted[0]["access_token"]).json()
    assert len(sites) == 1


def test_refreshes_control_reports_per_account(client: SandboxClient) -> None:
    minted = client.control("grants", {"count": 3})
    for grant in minted:
        client.refresh(grant["refresh_token"]).raise_for_status()
    by_account = client.control("refreshes")["by_account"]
    assert by_account == {m["account_id"]: 1 for m in minted}


def test_secrets_lists_everything_issued(client: SandboxClient) -> None:
    code = client.get_code()
    tokens = client.exchange(code).json()
    rotated = client.refresh(tokens["refresh_token"]).json()
    listed = client.control("secrets")
    assert listed["client_secret"] == CLIENT_SECRET
    assert code in listed["codes"]
    assert {tokens["access_token"], rotated["access_token"]} <= set(listed["access_tokens"])
    assert {tokens["refresh_token"], rotated["refresh_token"]} <= set(listed["refresh_tokens"])


def test_clock_rejects_going_backwards(client: SandboxClient) -> None:
    answer = requests.post(f"{client.base_url}/_sandbox/clock", json={"advance": -5}, timeout=5)
    assert answer.status_code == 400


def test_unknown_paths_and_methods(client: SandboxClient) -> None:
    assert requests.get(f"{client.base_url}/nowhere", timeout=5).status_code == 404
    assert requests.get(f"{client.base_url}/oauth/token", timeout=5).status_code == 405
    assert requests.get(f"{client.base_url}/_sandbox/reset", timeout=5).status_code == 405


def test_fifty_concurrent_requests_all_succeed(client: SandboxClient, sb: Sandbox) -> None:
    minted = client.control("grants", {"count": 50})
    client.faults({"token": {"latency_ms": 100}})

    def refresh(grant: dict[str, str]) -> int:
        with requests.Session() as session:
            body = {
                "grant_type": "refresh_token",
                "client_id": client.config.client_id,
                "client_secret": client.config.client_secret,
                "refresh_token": grant["refresh_token"],
            }
            return session.post(f"{client.base_url}/oauth/token", json=body, timeout=10).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(refresh, minted))
    assert statuses == [200] * 50
    assert time.monotonic() - started < 2.0
    assert sorted(sb.state.refresh_count_by_account.values()) == [1] * 50


def test_keep_alive_connection_is_reused(client: SandboxClient) -> None:
    with requests.Session() as session:
        first = session.get(f"{client.base_url}/_sandbox/counters", timeout=5, stream=True)
        sock = first.raw._connection.sock
        first.content  # noqa: B018 - read the body so the connection returns to the pool
        second = session.get(f"{client.base_url}/_sandbox/counters", timeout=5, stream=True)
        assert second.raw._connection.sock is sock
        assert second.headers.get("Connection") != "close"


def test_context_manager_binds_an_ephemeral_port() -> None:
    with Sandbox(SandboxConfig(port=0, leeway=0)) as other:
        assert other.port > 0
        assert other.url == f"http://127.0.0.1:{other.port}"
        assert requests.get(f"{other.url}/_sandbox/config", timeout=5).json()["leeway"] == 0
    try:
        requests.get(f"{other.url}/_sandbox/config", timeout=1)
    except requests.ConnectionError:
        pass
    else:
        raise AssertionError("the stopped sandbox still answers")


def test_runs_as_a_process_reading_its_environment_and_options_and_stops_on_sigterm() -> None:
    # SandboxProcess hands the config over as SANDBOX_* variables; the option wins over them.
    with SandboxProcess(SandboxConfig(leeway=5), args=("--client-secret", "s3cret")) as sandbox:
        assert float(sandbox.environment()["SANDBOX_LEEWAY"]) == 5
        assert sandbox.client.control("config")["leeway"] == 5
        assert sandbox.client.control("secrets")["client_secret"] == "s3cret"
        assert sandbox.process is not None
        sandbox.process.send_signal(signal.SIGTERM)
        assert sandbox.process.wait(timeout=5) == 0


BURST = 300
# Held inside the sandbox on every request: served one at a time, the burst would take
# BURST x 0.5 s = 150 s. (A listen backlog shorter than the burst fails it outright:
# connections reset or wait for SYN retransmits.) About 1 s on 2 cores.
BURST_LATENCY_MS = 500
BURST_DEADLINE_S = 10.0


def test_three_hundred_concurrent_requests_to_the_sandbox_process_all_succeed() -> None:
    with SandboxProcess() as sandbox:
        url, control = sandbox.url, sandbox.client
        minted = control.mint(BURST)
        control.faults({"token": {"latency_ms": BURST_LATENCY_MS}, "me": {"latency_ms": BURST_LATENCY_MS}})
        barrier = threading.Barrier(BURST)

        def call(n: int) -> tuple[int, Any]:
            grant = minted[n]
            # A connection of its own per request, opened once every thread is ready.
            with requests.Session() as session:
                barrier.wait(timeout=60)
                if n % 2:
                    answer = session.post(
                        f"{url}/oauth/token",
                        json={
                            "grant_type": "refresh_token",
                            "client_id": control.config.client_id,
                            "client_secret": control.config.client_secret,
                            "refresh_token": grant["refresh_token"],
                        },
                        timeout=60,
                    )
                else:
                    answer = session.get(
                        f"{url}/me", headers={"Authorization": f"Bearer {grant['access_token']}"}, timeout=60
                    )
                return answer.status_code, answer.json()

        with ThreadPoolExecutor(BURST) as pool:
            started = time.monotonic()
            results = list(pool.map(call, range(BURST)))
            elapsed = time.monotonic() - started

        assert [status for status, _ in results] == [200] * BURST
        for n, (_status, body) in enumerate(results):
            grant = minted[n]
            if n % 2:
                assert body["token_type"] == "Bearer"
                assert body["refresh_token"] != grant["refresh_token"]
                assert body["access_token"] != grant["access_token"]
            else:
                assert body["account_id"] == grant["account_id"]
        rotated = [body["refresh_token"] for n, (_status, body) in enumerate(results) if n % 2]
        assert len(set(rotated)) == BURST // 2
        # Every refresh counted once, against its own account: no answer crossed over.
        refreshed = control.refreshes_by_account()
        assert refreshed == {minted[n]["account_id"]: 1 for n in range(1, BURST, 2)}
        requests_seen = control.counters()["requests"]
        assert (requests_seen["token"], requests_seen["me"]) == (BURST // 2, BURST // 2)
        assert elapsed < BURST_DEADLINE_S, f"{BURST} concurrent requests took {elapsed:.1f} s"
