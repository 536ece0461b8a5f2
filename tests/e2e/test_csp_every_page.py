"""Every page of the portal and its admin under the real Content-Security-Policy, in chromium:
any violation (a blocked inline script or style, a blocked source) fails the test."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core import mail
from playwright.sync_api import expect

from accounts.models import User
from integrations.models import JiraConnection
from tests.support.browser import PASSWORD, Journey, off_the_browser_thread, totp_code

pytestmark = pytest.mark.browser

ADA_NAME = "Ada Lovelace"
STAFF_EMAIL = "csp.support@example.com"
STAFF_PASSWORD = "Staff-Zebra-Lamp-88"
# Reported by the page itself; chromium also prints "Refused to ... Content Security Policy".
LISTENER = """
document.addEventListener("securitypolicyviolation", (e) => {
  console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI} in ${e.sourceFile}:${e.lineNumber}`);
});
"""


class Violations:
    """Console messages about the CSP, per page they appeared on."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.found: list[str] = []
        self.pages: list[str] = []
        page.on("console", self._console)

    def _console(self, message: Any) -> None:
        text = message.text
        if "Content Security Policy" in text or text.startswith("CSP violation"):
            self.found.append(f"{self.page.url}: {text}")

    def visited(self, journey: Journey, step: str) -> None:
        """A page the test reached: its screenshot, and it must have been clean so far."""
        journey.page.wait_for_load_state("load")
        self.pages.append(journey.page.url)
        journey.shot(step)
        assert self.found == [], "\n".join(self.found)


def test_no_page_of_the_portal_or_its_admin_violates_the_content_security_policy(journey: Journey) -> None:
    page = journey.page
    page.context.add_init_script(LISTENER)
    csp = Violations(page)
    url = journey.portal.url

    # The detector works: an inline script added to a portal page is blocked and reported.
    page.goto(url + "/accounts/login/")
    page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = 'window.x = 1'; document.body.append(s); }"
    )
    page.wait_for_timeout(200)
    assert any("script-src" in line for line in csp.found), csp.found
    assert page.evaluate("() => window.x") is None
    csp.found.clear()

    # --- Signed out: sign-up, login, password reset, lockout -----------------------------
    page.goto(url + "/accounts/signup/")
    csp.visited(journey, "signup")
    journey.sign_up("csp.user@example.com")
    csp.visited(journey, "settings-no-connection")

    # --- Signed in: settings with a connection, My Jira, disconnect confirm, flow error ---
    page.click("#connect-jira")
    journey.consent(account_name=ADA_NAME, decision="Accept")
    expect(page.locator("article.connection")).to_have_count(1)
    csp.visited(journey, "settings-connected")
    journey.assert_avatar_loaded(page.locator("article.connection .account"))

    page.get_by_role("link", name="My Jira").click()
    expect(page.locator("td.key").first).to_be_visible()
    csp.visited(journey, "my-jira")

    connection_id = off_the_browser_thread(lambda: JiraConnection.objects.get(user__email="csp.user@example.com").pk)
    page.goto(f"{url}/integrations/jira/connections/{connection_id}/disconnect/")
    expect(page.locator("#confirm-disconnect")).to_be_visible()
    csp.visited(journey, "disconnect-confirm")

    page.goto(url + "/integrations/jira/callback/?code=forged&state=forged")
    expect(page.locator("h1")).to_contain_text("not valid")
    csp.visited(journey, "flow-error")

    page.goto(url + "/accounts/password_change/")
    expect(page.locator("input[name=new_password1]")).to_be_visible()
    csp.visited(journey, "password-change")

    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(url + "/accounts/login/")
    csp.visited(journey, "login")

    page.goto(url + "/accounts/password_reset/")
    csp.visited(journey, "password-reset")
    page.fill("input[name=email]", "csp.user@example.com")
    page.get_by_role("button").last.click()
    page.wait_for_url(url + "/accounts/password_reset/done/")
    csp.visited(journey, "password-reset-done")
    [link] = re.findall(r"https?://\S+/accounts/reset/\S+/", mail.outbox[-1].body)
    page.goto(url + link.split("/accounts/", 1)[1].join(["/accounts/", ""]))
    expect(page.locator("input[name=new_password1]")).to_be_visible()
    csp.visited(journey, "password-reset-confirm")
    page.fill("input[name=new_password1]", PASSWORD + "-new")
    page.fill("input[name=new_password2]", PASSWORD + "-new")
    page.get_by_role("button").last.click()
    page.wait_for_url(url + "/accounts/reset/done/")
    csp.visited(journey, "password-reset-complete")

    for _ in range(10):
        page.goto(url + "/accounts/login/")
        page.fill("input[name=username]", "csp.user@example.com")
        page.fill("input[name=password]", "not the password")
        page.get_by_role("button", name="Log in").click()
    expect(page.locator("#locked-out")).to_be_visible()
    csp.visited(journey, "lockout")

    # --- The admin: login, 2FA enrollment, recovery codes, connections, users ------------
    off_the_browser_thread(lambda: User.objects.create_superuser(STAFF_EMAIL, STAFF_PASSWORD))
    page.goto(url + "/admin/login/")
    csp.visited(journey, "admin-login")
    page.fill("input[name=username]", STAFF_EMAIL)
    page.fill("input[name=password]", STAFF_PASSWORD)
    page.locator("input[type=submit]").click()
    page.wait_for_url(re.compile(r".*/admin/otp/enroll/.*"))
    expect(page.locator("#otp-qr svg")).to_be_visible()
    csp.visited(journey, "admin-otp-enroll")
    page.fill("input[name=code]", totp_code(STAFF_EMAIL))
    page.locator("#otp-form input[type=submit]").click()
    expect(page.locator("#recovery-codes li")).to_have_count(10)
    csp.visited(journey, "admin-recovery-codes")
    recovery_code = page.locator("#recovery-codes li").first.inner_text().strip()
    page.click("#otp-continue")
    page.wait_for_url(url + "/admin/")
    csp.visited(journey, "admin-index")
    page.goto(url + "/admin/monitoring/connectionhealth/")
    expect(page.locator("svg.health-chart").first).to_be_visible()
    csp.visited(journey, "admin-connection-health")

    page.goto(url + "/admin/integrations/jiraconnection/")
    csp.visited(journey, "admin-connections")
    page.goto(f"{url}/admin/integrations/jiraconnection/{connection_id}/change/")
    csp.visited(journey, "admin-connection")
    page.get_by_role("button", name="Disconnect (delete its tokens)").click()
    expect(page.locator("h1")).to_contain_text("Disconnect these Jira connections?")
    csp.visited(journey, "admin-disconnect-confirm")
    page.goto(url + "/admin/integrations/connectionevent/")
    csp.visited(journey, "admin-events")
    page.goto(url + "/admin/accounts/user/")
    csp.visited(journey, "admin-users")
    user_id = off_the_browser_thread(lambda: User.objects.get(email="csp.user@example.com").pk)
    page.goto(f"{url}/admin/accounts/user/{user_id}/change/")
    csp.visited(journey, "admin-user")
    page.goto(url + "/admin/axes/accessattempt/")
    csp.visited(journey, "admin-lockouts")

    # A later login: the code page, passed with a recovery code.
    page.locator("#logout-form button").click()
    page.wait_for_load_state("load")
    csp.visited(journey, "admin-logged-out")
    page.goto(url + "/admin/login/?next=/admin/")
    page.fill("input[name=username]", STAFF_EMAIL)
    page.fill("input[name=password]", STAFF_PASSWORD)
    page.locator("input[type=submit]").click()
    page.wait_for_url(re.compile(r".*/admin/otp/\?.*"))
    csp.visited(journey, "admin-otp-verify")
    page.fill("input[name=code]", recovery_code)
    page.locator("#otp-form input[type=submit]").click()
    page.wait_for_url(url + "/admin/")
    csp.visited(journey, "admin-after-recovery-code")

    assert len(csp.pages) >= 25
    assert journey.blocked == [], "the pages needed the network"
