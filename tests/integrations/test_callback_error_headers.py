"""Every way the callback ends without a connection: the page is never cached, and its URL
(which held the code and state) never leaves as a Referer, whatever link the user follows."""

from __future__ import annotations

import pytest
import responses

from accounts.models import User
from tests.support.accounts import logged_in
from tests.support.oauth import FAILED_CALLBACKS, Scenario, row_counts


@pytest.mark.parametrize(("scenario", "status"), FAILED_CALLBACKS.values(), ids=FAILED_CALLBACKS.keys())
def test_failed_callback_is_not_stored_by_caches_nor_sent_as_a_referer(
    alice: User, mocked: responses.RequestsMock, scenario: Scenario, status: int
) -> None:
    response = scenario(logged_in(alice), mocked)

    assert response.status_code == status
    assert "no-store" in [part.strip() for part in response["Cache-Control"].split(",")]
    # SecurityMiddleware's site-wide "same-origin" would still send it to our own pages.
    assert response["Referrer-Policy"] == "no-referrer"
    assert row_counts()[0] == 0
