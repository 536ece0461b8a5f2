"""/metrics under real gunicorn with several workers: the numbers add up across them."""

from __future__ import annotations

import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.gunicorn import HOST, free_port, gunicorn, request
from tests.support.processes import manage, production_env

WORKERS = 3
TOKEN = "gunicorn-metrics-token-" + "g" * 32


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def portal_env(tmp_path: Path) -> dict[str, str]:
    unreachable = f"http://127.0.0.1:{free_port()}"
    return {
        **production_env(tmp_path / "db.sqlite3"),
        # Plain http and unbuilt static files; nothing the metrics depend on.
        "DEBUG": "true",
        "ATLASSIAN_CLIENT_ID": "client-id",
        "ATLASSIAN_CLIENT_SECRET": "client-secret-never-logged",
        "ATLASSIAN_REDIRECT_URI": f"https://{HOST}/integrations/jira/callback/",
        # Nothing listens there: every token call fails at once, as when Atlassian is down.
        "ATLASSIAN_AUTH_URL": unreachable,
        "ATLASSIAN_API_URL": unreachable,
        "MONITORING_FLUSH_SECONDS": "0",
    }


def test_metrics_add_up_across_gunicorn_workers(tmp_path: Path) -> None:
    env = portal_env(tmp_path)
    assert manage("migrate", "--noinput", env=env).returncode == 0
    assert manage("createcachetable", env=env).returncode == 0
    seeded = manage("shell", "-c", f"from tests.monitoring.gunicorn_seed import main; main({WORKERS})", env=env)
    assert seeded.returncode == 0, seeded.stderr
    sessions = json.loads(seeded.stdout.strip().splitlines()[-1])
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    env.update({"METRICS_TOKEN": TOKEN, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)})

    with gunicorn(env, "--workers", str(WORKERS)) as port, ThreadPoolExecutor(max_workers=WORKERS) as pool:
        # Each page waits for the refresh another worker holds: a sync worker serves one
        # request at a time, so the three waits are in three different workers.
        pages = [pool.submit(request, port, "/jira/", {"Cookie": f"sessionid={key}"}) for key in sessions]
        time.sleep(3)
        with sqlite3.connect(tmp_path / "db.sqlite3") as database:
            database.execute("UPDATE integrations_jiraconnection SET claim_id = NULL, claimed_until = NULL")
        statuses = [page.result()[0] for page in pages]
        refused = request(port, "/metrics")
        status, body = request(port, "/metrics", {"Authorization": f"Bearer {TOKEN}"})

    assert statuses == [200] * WORKERS
    assert refused[0] == 401
    assert status == 200
    found = samples(body)
    waits = found[("jiraconnect_claim_wait_seconds_count", ())]
    waited = found[("jiraconnect_claim_wait_seconds_sum", ())]
    pids = {path.stem.rsplit("_", 1)[-1] for path in multiproc.glob("histogram_*.db")}
    assert (waits, len(pids)) == (WORKERS, WORKERS)
    assert waited >= WORKERS * 2
    # Once released, each worker refreshed itself and met the unreachable token endpoint
    # (a lost reply is retried once): counted through the database, flushed per request.
    failed = (("outcome", "transient_failure"), ("reason", "transient"), ("source", "on_demand"))
    assert found[("jiraconnect_refresh_total", failed)] == WORKERS
    assert found[("jiraconnect_token_endpoint_seconds_count", (("source", "on_demand"),))] == 2 * WORKERS
    assert found[("jiraconnect_connections", (("status", "refresh_failing"),))] == WORKERS
    assert "secret" not in body


def test_metrics_answer_404_under_gunicorn_when_not_configured(tmp_path: Path) -> None:
    env = portal_env(tmp_path)
    assert manage("migrate", "--noinput", env=env).returncode == 0

    with gunicorn(env, "--workers", "2") as port:
        status, _ = request(port, "/metrics", {"Authorization": f"Bearer {TOKEN}"})

    assert status == 404
