"""/metrics for Prometheus and /healthz/refresh for uptime monitors."""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from integrations import clock
from monitoring.metrics import exposition
from monitoring.recorder import refresh_last_success


def _bearer_matches(request: HttpRequest, expected: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


def _address_allowed(request: HttpRequest, networks: list[str]) -> bool:
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(network) for network in networks)


def _refused(request: HttpRequest) -> HttpResponse | None:
    """Why a scrape is refused, or None. Off (404) unless METRICS_TOKEN or
    METRICS_ALLOWED_IPS is set: a portal never publishes its metrics by default."""
    token, networks = settings.METRICS_TOKEN, settings.METRICS_ALLOWED_IPS
    if not token and not networks:
        raise Http404("Metrics are not enabled.")
    if networks and not _address_allowed(request, networks):
        return HttpResponse("Forbidden.\n", status=403, content_type="text/plain")
    if token and not _bearer_matches(request, token):
        response = HttpResponse("Bearer token required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return None


@require_GET
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    refused = _refused(request)
    if refused is not None:
        return refused
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)


@require_GET
@never_cache
def refresh_health(request: HttpRequest) -> JsonResponse:
    """200 while the scheduled run has finished within REFRESH_STALE_AFTER, else 503.

    A sibling of /healthz rather than part of it: a load balancer that checks /healthz
    would otherwise take every web host out of service because cron stopped.
    """
    stale_after = settings.REFRESH_STALE_AFTER
    if stale_after is None:
        raise Http404("Refresh monitoring is not enabled.")
    last = refresh_last_success()
    age = None if last is None else max(0.0, (clock.now() - last).total_seconds())
    running = age is not None and age <= stale_after.total_seconds()
    body = {
        "status": "ok" if running else "error",
        "refresh": "running" if running else "not running",
        "last_success": None if last is None else last.isoformat(),
        "age_seconds": None if age is None else round(age),
        "stale_after_seconds": round(stale_after.total_seconds()),
    }
    return JsonResponse(body, status=200 if running else 503)
