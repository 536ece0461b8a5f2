"""`make run` (scripts/run.py): the offline sandbox when no Atlassian app is configured."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
from jwt.warnings import InsecureKeyLengthWarning

from integrations.atlassian import verify_jwt
from sandbox.config import CLIENT_ID, CLIENT_SECRET
from sandbox.delivery import signed_headers
from sandbox.seed import GRACE
from sandbox.testing import approve, free_ports
from tests.support.browser import ada_open_issue_keys

BASE_DIR = Path(__file__).resolve().parents[2]
SCRIPT = BASE_DIR / "scripts" / "run.py"
START_TIMEOUT = 30.0


def load_run_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_script", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is built.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


run_script = load_run_script()


def plan_for(environment: dict[str, str], base_dir: Path) -> object:
    return run_script.sandbox_plan(
        environment=environment,
        file_values=run_script.env_file_values(environment, base_dir),
        host="127.0.0.1",
        port=8000,
        sandbox_port=8001,
    )


def test_no_client_id_anywhere_starts_the_sandbox(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DEBUG=true\n")
    plan = plan_for({}, tmp_path)
    assert plan is not None
    assert plan.portal_env() == {
        "ATLASSIAN_CLIENT_ID": CLIENT_ID,
        "ATLASSIAN_CLIENT_SECRET": CLIENT_SECRET,
        "ATLASSIAN_REDIRECT_URI": "http://127.0.0.1:8000/integrations/jira/callback/",
        "ATLASSIAN_AUTH_URL": "http://127.0.0.1:8001",
        "ATLASSIAN_API_URL": "http://127.0.0.1:8001",
        "ATLASSIAN_WEBHOOK_URL": "http://127.0.0.1:8000/integrations/jira/webhook/",
    }


def test_client_id_in_dotenv_serves_the_portal_alone(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DEBUG=true\nATLASSIAN_CLIENT_ID='real-app-id'\n")
    assert plan_for({}, tmp_path) is None


def test_client_id_in_the_environment_serves_the_portal_alone(tmp_path: Path) -> None:
    assert plan_for({"ATLASSIAN_CLIENT_ID": "real-app-id"}, tmp_path) is None


def test_empty_environment_variable_wins_over_dotenv_as_in_settings(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("ATLASSIAN_CLIENT_ID=real-app-id\n")
    assert plan_for({"ATLASSIAN_CLIENT_ID": ""}, tmp_path) is not None


def test_env_file_variable_is_honoured_like_settings(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("ATLASSIAN_CLIENT_ID=from-project-dotenv\n")
    other = tmp_path / "other.env"
    other.write_text("ATLASSIAN_CLIENT_ID=from-other-file\n")
    before = dict(os.environ)
    assert run_script.env_file_values({}, tmp_path) == {"ATLASSIAN_CLIENT_ID": "from-project-dotenv"}
    assert run_script.env_file_values({"JIRACONNECT_ENV_FILE": ""}, tmp_path) == {}
    assert run_script.env_file_values({"JIRACONNECT_ENV_FILE": str(other)}, tmp_path) == {
        "ATLASSIAN_CLIENT_ID": "from-other-file"
    }
    # Read into a dict of its own: the script's environment stays what the shell gave it.
    assert dict(os.environ) == before


def test_sandbox_is_told_the_portals_own_callback_on_any_bind_address() -> None:
    plan = run_script.sandbox_plan(environment={}, file_values={}, host="0.0.0.0", port=8123, sandbox_port=8124)
    command = plan.command()
    assert command[command.index("--redirect-uri") + 1] == "http://127.0.0.1:8123/integrations/jira/callback/"
    assert command[command.index("--port") + 1] == "8124"
    assert plan.portal_env()["ATLASSIAN_REDIRECT_URI"] == "http://127.0.0.1:8123/integrations/jira/callback/"
    assert plan.portal_env()["ATLASSIAN_WEBHOOK_URL"] == "http://127.0.0.1:8123/integrations/jira/webhook/"


def sign_and_verify(*, sandbox_secret: str, portal_secret: str, settings: Any) -> None:
    """A delivery as the sandbox signs it, checked by the portal's receiver."""
    settings.ATLASSIAN_CLIENT_SECRET = portal_secret
    headers = signed_headers(client_id=CLIENT_ID, client_secret=sandbox_secret, identifier="delivery-1", retry=0)
    verify_jwt(authorization=headers["Authorization"])


def test_make_run_signs_and_verifies_deliveries_without_a_key_length_warning(settings: Any) -> None:
    plan = run_script.sandbox_plan(environment={}, file_values={}, host="127.0.0.1", port=8000, sandbox_port=8001)
    command = plan.command()
    with warnings.catch_warnings():
        warnings.simplefilter("error", InsecureKeyLengthWarning)
        sign_and_verify(
            sandbox_secret=command[command.index("--client-secret") + 1],
            portal_secret=plan.portal_env()["ATLASSIAN_CLIENT_SECRET"],
            settings=settings,
        )
    # The check above would notice a short key: the sandbox's old 21-byte default warns.
    old_default = "sandbox-client-secret"
    with pytest.warns(InsecureKeyLengthWarning):
        sign_and_verify(sandbox_secret=old_default, portal_secret=old_default, settings=settings)


def test_print_env_gives_other_commands_the_sandbox_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JIRACONNECT_ENV_FILE", "")
    monkeypatch.delenv("ATLASSIAN_CLIENT_ID", raising=False)
    assert run_script.main(["--print-env", "--port", "8200", "--sandbox-port", "8201"]) == 0
    exports = capsys.readouterr().out.splitlines()
    assert "export ATLASSIAN_AUTH_URL=http://127.0.0.1:8201" in exports
    assert "export ATLASSIAN_REDIRECT_URI=http://127.0.0.1:8200/integrations/jira/callback/" in exports

    monkeypatch.setenv("ATLASSIAN_CLIENT_ID", "real-app-id")
    assert run_script.main(["--print-env"]) == 0
    assert "export" not in capsys.readouterr().out


# ---- the real thing, as `make run` starts it ------------------------------------------------
def answering(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def healthy(base_url: str) -> bool:
    try:
        return requests.get(f"{base_url}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # Fields after the ")" that closes the command name: state, ppid, pgrp, ...
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """What a developer's shell gives `make run`: no Atlassian app, no test settings."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "JIRACONNECT_ENV_FILE": "",
        "DEBUG": "true",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "LOG_LEVEL": "WARNING",
    }
    for command in (["migrate", "--noinput"], ["createcachetable"]):  # as `make run` does
        subprocess.run([sys.executable, "manage.py", *command], cwd=BASE_DIR, env=env, check=True, capture_output=True)
    return env


@pytest.fixture
def running(clean_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int, Path]]:
    port, sandbox_port = free_ports(2)
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--port", str(port), "--sandbox-port", str(sandbox_port)],
            cwd=BASE_DIR,
            env=clean_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process, port, sandbox_port, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_make_run_serves_portal_against_sandbox_and_ctrl_c_stops_everything(
    running: tuple[subprocess.Popen[bytes], int, int, Path],
) -> None:
    process, port, sandbox_port, log = running
    portal = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    # Healthy, not merely accepting: runserver's autoreloader may still be settling.
    while not healthy(portal):
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"portal did not start:\n{log.read_text()}"
        time.sleep(0.1)  # waiting for another process to bind, not passing time for the code under test

    banner = log.read_text()
    assert "OFFLINE SANDBOX: this is NOT Atlassian." in banner
    assert re.search(r"Ada Lovelace\s+ada@example\.com\s+sites: acme, globex, initech", banner)
    assert "ATLASSIAN_CLIENT_ID" in banner
    assert "Using a real Atlassian app" in banner

    # The portal sends a signed-in user's connect request to the sandbox, with the
    # callback the sandbox was started with.
    browser = requests.Session()
    signup = browser.get(f"{portal}/accounts/signup/", timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', signup.text)
    assert token is not None, f"HTTP {signup.status_code}: {signup.text[:500]}\n{log.read_text()}"
    password = "Zebra-Lamp-Orbit-77"
    created = browser.post(
        f"{portal}/accounts/signup/",
        data={
            "csrfmiddlewaretoken": token[1],
            "email": "dev@example.com",
            "password1": password,
            "password2": password,
        },
        headers={"Referer": f"{portal}/accounts/signup/"},
        allow_redirects=False,
        timeout=10,
    )
    assert created.status_code == 302
    # The sign-up was counted against its abuse limit: the cache table exists.
    assert "cache is unavailable" not in log.read_text()
    connect = browser.post(
        f"{portal}/integrations/jira/connect/",
        data={"csrfmiddlewaretoken": browser.cookies["csrftoken"]},
        headers={"Referer": f"{portal}/settings/"},
        allow_redirects=False,
        timeout=10,
    )
    assert connect.status_code == 302
    assert connect.headers["Location"].startswith(f"http://127.0.0.1:{sandbox_port}/authorize?")
    consent = browser.get(connect.headers["Location"], timeout=10)
    assert consent.status_code == 200
    assert 'value="decline"' in consent.text
    sandbox_config = requests.get(f"http://127.0.0.1:{sandbox_port}/_sandbox/config", timeout=10).json()
    assert sandbox_config["redirect_uri"] == f"http://127.0.0.1:{port}/integrations/jira/callback/"

    # Live activity: the callback registers the webhooks, an issue changed at the sandbox is
    # delivered to this portal, signed with the secret it was given, and My Jira lists it.
    settings_page = browser.get(approve(browser, connect.headers["Location"]), timeout=20)
    assert "Connected Jira as Ada Lovelace." in settings_page.text, log.read_text()
    sandbox = f"http://127.0.0.1:{sandbox_port}"
    key = ada_open_issue_keys()["ACME"][0]
    changed = browser.post(
        f"{sandbox}/_sandbox/issues/{key}", data={"summary": "Changed under make run", "actor": GRACE}, timeout=10
    )
    assert changed.status_code == 200
    sent = requests.get(f"{sandbox}/_sandbox/deliveries", params={"settle": 10}, timeout=20).json()
    assert [(d["status"], [a["outcome"] for a in d["attempts"]]) for d in sent["deliveries"]] == [
        ("delivered", ["200"])
    ], log.read_text()
    activity = browser.get(f"{portal}/jira/", timeout=20).text
    assert "Grace Hopper updated" in activity
    assert "Changed under make run" in activity

    groups = children_of(process.pid)
    assert len(groups) == 2  # the sandbox and runserver, each leading its own process group
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=20) == 0
    assert [pgid for pgid in groups if group_alive(pgid)] == []
    assert not answering(port)
    assert not answering(sandbox_port)
