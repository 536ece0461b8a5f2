"""Headless chromium as the end-to-end tests drive it: where it is, how it starts, and one
user's walk through the live portal (`Journey`), with screenshots of every step."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.conf import settings as django_settings
from django.db import connections
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import Page

from sandbox.seed import ADA, SITES, build_issues
from sandbox.testing import SandboxClient
from tests.support.secrets import assert_no_secrets, raw_rows

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
# The sandbox's seeded user, as the journeys sign in with her.
ADA_NAME = "Ada Lovelace"


def ada_open_issue_keys() -> dict[str, list[str]]:
    """Per project key: Ada's open issues, most recently updated first (the My Jira order)."""
    issues = build_issues()
    return {
        site.project_key: [
            issue.key
            for issue in sorted(issues[site.cloud_id], key=lambda i: i.updated, reverse=True)
            if issue.assignee_id == ADA and issue.status_category != "done"
        ]
        for site in SITES
    }


def chromium_path() -> str | None:
    return shutil.which("chromium") or (os.path.exists("/usr/bin/chromium") and "/usr/bin/chromium") or None


@dataclass(frozen=True)
class Portal:
    """The live portal, and the sandbox it is pointed at."""

    url: str
    sandbox: SandboxClient


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
        assert_no_secrets(texts, *self.portal.sandbox.issued_secrets())

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
        self.page.wait_for_url(self.portal.sandbox.base_url + "/authorize?**")
        self.page.get_by_label(account_name).check()
        self.shot(step)
        self.page.get_by_role("button", name=decision).click()
        self.page.wait_for_url(self.portal.url + "/settings/")


def totp_code(email: str) -> str:
    device = off_the_browser_thread(lambda: TOTPDevice.objects.get(user__email=email))
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):06d}"


def admin_sign_in(page: Page, base_url: str, *, email: str, password: str) -> None:
    """A staff member's first admin login in the browser: password, then the second factor
    (enrolling an authenticator, as the admin requires), past the recovery codes."""
    page.goto(base_url + "/admin/login/")
    page.fill("input[name=username]", email)
    page.fill("input[name=password]", password)
    page.locator("input[type=submit]").click()
    page.wait_for_url(re.compile(r".*/admin/otp/enroll/.*"))
    page.fill("input[name=code]", totp_code(email))
    page.locator("#otp-form input[type=submit]").click()
    page.click("#otp-continue")
    page.wait_for_url(base_url + "/admin/")
