"""The webhook receiver benchmark's code still runs (`make bench` is not part of CI).

The deliveries it sends are built and signed here and posted through the test client to
the real receiver: fresh ones are stored, retries of them are not, forged ones get 401.
wrk's report, as bench/wrk_webhooks.lua extends it, is read from a real one. No timing
is asserted anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from bench import webhooks
from bench.harness import BenchError
from bench.load import parse_wrk
from integrations.models import JiraEvent, JiraWebhook
from tests.test_bench_smoke import WRK_REPORT as WRK_STATUS_REPORT

pytestmark = pytest.mark.django_db


def _post(client: Client, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    sent = {name: value for name, value in headers.items() if name != "Content-Type"}
    response = client.post(reverse("jira-webhook"), data=body, content_type="application/json", headers=sent)
    return response.status_code, response.content


def test_the_benchs_deliveries_are_stored_once_retried_for_free_and_refused_when_forged(client: Client) -> None:
    sites = webhooks.seed_webhooks(connections=3)
    bodies = webhooks.delivery_bodies(sites)
    assert JiraWebhook.objects.count() == 6
    assert len(bodies) == 6

    def send(prefix: str, **signing: Any) -> list[tuple[int, bytes]]:
        return [
            _post(client, body, webhooks.delivery_headers(identifier=f"{prefix}-{n}", **signing))
            for n, body in enumerate(bodies)
        ]

    fresh = send("fresh")
    retries = send("fresh", retry=1)
    forged = send("forged", forged=True)

    assert fresh == [(200, b"stored")] * 6
    assert retries == [(200, b"ok")] * 6
    assert {status for status, _ in forged} == {401}
    # Each body names one site (one webhook or both): one event per fresh delivery.
    assert JiraEvent.objects.count() == 6
    assert sorted(JiraEvent.objects.values_list("site_id", flat=True)) == sorted(2 * [site.pk for site in sites])
    # Per site: the first body matched one webhook, the second both.
    assert sorted(JiraWebhook.objects.values_list("delivery_count", flat=True)) == [1, 1, 1, 2, 2, 2]


def test_the_wrk_data_file_holds_signed_headers_bodies_and_replays(tmp_path: Path) -> None:
    bodies = [b'{"webhookEvent":"jira:issue_updated","matchedWebhookIds":[1]}', b'{"x":"]=]"}']
    target = tmp_path / "deliveries.lua"

    webhooks.write_script_data(target, kind="duplicate", prefix="p", bodies=bodies, replays=[("id-1", 1)])
    duplicate = target.read_text()
    webhooks.write_script_data(target, kind="forged", prefix="p", bodies=bodies)
    forged = target.read_text()

    assert all(body.decode() in duplicate for body in bodies)
    # wrk_webhooks.lua sets the identifier; Lua indexes from 1.
    assert webhooks.ID_HEADER not in duplicate
    assert "{[===[id-1]===], 2}," in duplicate
    assert "[ [===[X-Atlassian-Webhook-Retry]===] ] = [===[1]===]" in duplicate
    assert "X-Atlassian-Webhook-Retry" not in forged
    secret = settings.ATLASSIAN_CLIENT_SECRET
    assert jwt.decode(_token(duplicate), secret, algorithms=["HS256"])["iss"] == settings.ATLASSIAN_CLIENT_ID
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(_token(forged), secret, algorithms=["HS256"])
    with pytest.raises(BenchError, match="delimiter"):
        webhooks.write_script_data(target, kind="fresh", prefix="p", bodies=[b'"]===]"'])


def _token(lua: str) -> str:
    line = next(line for line in lua.splitlines() if "[===[Authorization]===]" in line)
    return line.split("Bearer ", 1)[1].split("]===]", 1)[0]


# What bench/wrk_webhooks.lua adds to wrk's report.
WRK_REPORT = WRK_STATUS_REPORT + "Webhook answers: sent 6410, expected 6402, unexpected 0, stored 6402\n"


def test_wrk_webhook_report_is_read_with_the_scripts_counts_and_the_slowest_answer() -> None:
    result = parse_wrk(WRK_REPORT)
    answers = webhooks.parse_answers(WRK_REPORT)

    assert (result.requests, result.max_ms) == (6402, pytest.approx(48.1))
    assert answers == webhooks.Answers(sent=6410, expected=6402, unexpected=0, stored=6402)
    with pytest.raises(BenchError, match=r"wrk_webhooks\.lua"):
        webhooks.parse_answers(WRK_REPORT.replace("Webhook answers", "Answers"))
