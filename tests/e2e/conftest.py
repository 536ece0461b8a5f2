"""End-to-end fixtures: the live portal (pytest-django's live_server, in a thread of this
process), an in-process Atlassian sandbox, and headless chromium driven by Playwright.

Both servers run in this process so the suite needs no migrations of its own and works
on SQLite and PostgreSQL alike: live_server uses the test database (transactional).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
import requests
from django.conf import settings as django_settings
from django.db import connections

from sandbox.server import Sandbox, SandboxConfig
from tests.conftest import chromium_path
from tests.proof.harness import SecretScanner, logging_everything, raw_rows

CALLBACK_PATH = "/integrations/jira/callback/"
ARTIFACTS = Path(django_settings.BASE_DIR) / "artifacts" / "e2e"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
T = TypeVar("T")
PASSWORD = "Zebra-Lamp-Orbit-77"
# Playwright waits this long (ms) for a page or an element; a broken step fails fast.
STEP_TIMEOUT_MS = 10_000


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    # Lets the journey fixture take a last screenshot when the test body failed.
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    path = chromium_path()
    if path is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    return path


@pytest.fixture(scope="session")
def sandbox(live_server: Any) -> Iterator[Sandbox]:
    # Started after live_server: its redirect URI has to be the live portal's callback.
    config = SandboxConfig(host="127.0.0.1", port=0, redirect_uri=live_server.url + CALLBACK_PATH)
    with Sandbox(config) as server:
        yield server


@dataclass(frozen=True)
class Portal:
    url: str
    sandbox_url: str

    def control(self, name: str, body: dict[str, Any] | None = None) -> Any:
        """A /_sandbox/ control over HTTP, as a developer would call it."""
        target = f"{self.sandbox_url}/_sandbox/{name}"
        answer = requests.post(target, json=body, timeout=5) if body is not None else requests.get(target, timeout=5)
        answer.raise_for_status()
        return answer.json()

    def issued_secrets(self) -> list[str]:
        """Every code, token and client secret the sandbox has issued (this session)."""
        issued = self.control("secrets")
        return [issued["client_secret"], *issued["codes"], *issued["access_tokens"], *issued["refresh_tokens"]]


@pytest.fixture
def portal(live_server: Any, sandbox: Sandbox, settings: Any) -> Portal:
    """The live portal pointed at the sandbox, as `make run` does with env variables."""
    settings.ATLASSIAN_CLIENT_ID = sandbox.config.client_id
    settings.ATLASSIAN_CLIENT_SECRET = sandbox.config.client_secret
    settings.ATLASSIAN_REDIRECT_URI = live_server.url + CALLBACK_PATH
    settings.ATLASSIAN_AUTH_URL = sandbox.url
    settings.ATLASSIAN_API_URL = sandbox.url
    settings.SITE_URL = live_server.url
    result = Portal(url=live_server.url, sandbox_url=sandbox.url)
    result.control("reset", {})
    return result


def off_the_browser_thread(work: Callable[[], T]) -> T:
    """Run ORM code (or a management command) in a thread of its own.

    Playwright's sync API keeps an asyncio loop on the test's thread. Django refuses ORM
    calls there, and asgiref would file their database connection under the loop's
    context, where nothing closes it (PostgreSQL then cannot drop the test database).
    """

    def closing() -> T:
        try:
            return work()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(closing).result()


@dataclass
class Journey:
    """One user's browser tab, with numbered screenshots of every step."""

    page: Any
    portal: Portal
    folder: Path
    # The portal's logs (live server thread included) at DEBUG, SQL with its parameters.
    logs: pytest.LogCaptureFixture
    steps: int = 0
    seen_html: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    database: dict[str, str] = field(default_factory=dict)

    def shot(self, step: str) -> None:
        self.steps += 1
        self.seen_html.append(self.page.content())
        self.page.screenshot(path=str(self.folder / f"{self.steps:02d}-{step}.png"), full_page=True)

    def assert_avatar_loaded(self, account: Any) -> None:
        """The account's <img> was fetched and decoded: no broken-image placeholder."""
        from playwright.sync_api import expect

        image = account.locator("img")
        expect(image).to_have_attribute("src", re.compile(r"/avatars/[a-z0-9-]+\.svg$"))
        self.page.wait_for_load_state("load")
        assert image.evaluate("img => img.complete && img.naturalWidth > 0"), image.get_attribute("src")

    def snapshot_database(self, moment: str) -> None:
        """Every raw column of the integration tables, as stored now (tokens included)."""
        self.database[moment] = off_the_browser_thread(raw_rows)

    def assert_no_issued_secret_leaked(self, also: dict[str, str] | None = None) -> None:
        """No code, token or client secret the sandbox issued in a page the browser saw,
        in the portal's logs, in the raw columns of the database snapshots, or in `also`."""
        self.snapshot_database("end")
        # The capture sees the live server's own SQL (sign-up runs there), not just ours.
        assert any(
            r.name == "django.db.backends" and 'INSERT INTO "accounts_user"' in r.getMessage()
            for r in self.logs.records
        ), "the portal's SQL was not captured"
        texts = {f"page-{n}": html for n, html in enumerate(self.seen_html, 1)}
        texts["logs"] = self.logs.text
        texts.update({f"database-{moment}": rows for moment, rows in self.database.items()})
        texts.update(also or {})
        SecretScanner(self.portal.issued_secrets()).assert_clean(texts)

    def sign_up(self, email: str) -> None:
        self.page.goto(self.portal.url + "/accounts/signup/")
        self.page.fill("input[name=email]", email)
        self.page.fill("input[name=password1]", PASSWORD)
        self.page.fill("input[name=password2]", PASSWORD)
        self.shot("signup")
        self.page.get_by_role("button", name="Sign up").click()
        self.page.wait_for_url(self.portal.url + "/settings/")

    def consent(self, *, account_name: str, decision: str, step: str = "consent") -> None:
        """On the sandbox consent page: pick a seeded account, press Accept or Decline,
        and follow the redirect back to the portal's settings page."""
        self.page.wait_for_url(self.portal.sandbox_url + "/authorize?**")
        self.page.get_by_label(account_name).check()
        self.shot(step)
        self.page.get_by_role("button", name=decision).click()
        self.page.wait_for_url(self.portal.url + "/settings/")


@pytest.fixture
def journey(
    request: pytest.FixtureRequest, chromium_executable: str, portal: Portal, caplog: pytest.LogCaptureFixture
) -> Iterator[Journey]:
    from playwright.sync_api import sync_playwright

    folder = ARTIFACTS / request.node.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with sync_playwright() as playwright, logging_everything(caplog) as logs:
        browser = playwright.chromium.launch(executable_path=chromium_executable, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(STEP_TIMEOUT_MS)
            walk = Journey(page=context.new_page(), portal=portal, folder=folder, logs=logs)

            def offline(route: Any) -> None:
                # The suite must pass without a network: anything but the two local servers
                # (e.g. an https avatar of the real Atlassian) is refused, never fetched.
                if urlsplit(route.request.url).hostname in ("localhost", "127.0.0.1"):
                    route.continue_()
                else:
                    walk.blocked.append(route.request.url)
                    route.abort()

            context.route("**/*", offline)
            yield walk
            call_report = getattr(request.node, "rep_call", None)
            if call_report is not None and call_report.failed:
                walk.shot("failure")
        finally:
            browser.close()
