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


WRK_REPORT = """Running 10s test @ http://127.0.0.1:8123/integrations/jira/webhook/
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    98.51ms   40.02ms 613.10ms   81.00%
    Req/Sec    36.11      9.40    60.00     70.00%
  Latency Distribution
     50%   89.40ms
     75%  110.20ms
     90%  150.80ms
     99%  338.90ms
  725 requests in 10.02s, 150.13KB read
  Socket errors: connect 0, read 725, write 0, timeout 0
Requests/sec:     72.36
Transfer/sec:     14.98KB
Not-200 responses: 0
Webhook answers: sent 733, expected 725, unexpected 0, stored 725
"""


def test_wrk_webhook_report_is_read_with_the_scripts_counts_and_the_slowest_answer() -> None:
    result = parse_wrk(WRK_REPORT)
    answers = webhooks.parse_answers(WRK_REPORT)

    assert (result.requests, result.max_ms, result.p99_ms) == (725, pytest.approx(613.1), pytest.approx(338.9))
    assert answers == webhooks.Answers(sent=733, expected=725, unexpected=0, stored=725)
    with pytest.raises(BenchError, match=r"wrk_webhooks\.lua"):
        webhooks.parse_answers(WRK_REPORT.replace("Webhook answers", "Answers"))
