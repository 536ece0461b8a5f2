"""End-to-end fixtures: the live portal (pytest-django's live_server, in a thread of this
process), an in-process Atlassian sandbox, and headless chromium driven by Playwright.

Both servers run in this process so the suite needs no migrations of its own and works
on SQLite and PostgreSQL alike: live_server uses the test database (transactional).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from sandbox.server import Sandbox, SandboxConfig
from sandbox.testing import SandboxClient
from tests.support.browser import ARTIFACTS, CHROMIUM_ARGS, STEP_TIMEOUT_MS, Journey, Portal, chromium_path
from tests.support.oauth import CALLBACK_PATH
from tests.support.secrets import logging_everything


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


@pytest.fixture
def portal(live_server: Any, sandbox: Sandbox, settings: Any) -> Iterator[Portal]:
    """The live portal pointed at the sandbox, as `make run` does with env variables."""
    settings.ATLASSIAN_CLIENT_ID = sandbox.config.client_id
    settings.ATLASSIAN_CLIENT_SECRET = sandbox.config.client_secret
    settings.ATLASSIAN_REDIRECT_URI = live_server.url + CALLBACK_PATH
    settings.ATLASSIAN_AUTH_URL = sandbox.url
    settings.ATLASSIAN_API_URL = sandbox.url
    settings.SITE_URL = live_server.url
    client = SandboxClient(sandbox.url, sandbox.config)
    client.reset()
    yield Portal(url=live_server.url, sandbox=client)
    client.close()


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
