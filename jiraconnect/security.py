"""The Content-Security-Policy of the current settings."""

from __future__ import annotations

from urllib.parse import urlsplit

from csp.middleware import CSPMiddleware, PolicyParts
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

from jiraconnect.hosts import is_loopback


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class PortalCSPMiddleware(CSPMiddleware):
    """settings.CONTENT_SECURITY_POLICY plus the Atlassian origins in force for this request.

    Read per request, not at start-up: the origins are settings (ATLASSIAN_AUTH_URL,
    ATLASSIAN_API_URL) that point at the local sandbox in development and tests.
    """

    def get_policy_parts(
        self, request: HttpRequest, response: HttpResponseBase, report_only: bool = False
    ) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        if report_only:
            return parts
        # Connect posts to the portal, which redirects to Atlassian's consent page:
        # browsers hold that redirect to form-action.
        extra: dict[str, list[str]] = {"form-action": [_origin(settings.ATLASSIAN_AUTH_URL)]}
        api = urlsplit(settings.ATLASSIAN_API_URL)
        # img-src takes any https image already; plain http only from the local sandbox,
        # which serves its avatars (integrations.atlassian._image_url keeps no other http).
        if api.scheme == "http" and is_loopback(api.hostname):
            extra["img-src"] = [_origin(settings.ATLASSIAN_API_URL)]
        update = dict(parts.update or {})
        for directive, sources in extra.items():
            update[directive] = [*sources, *update.get(directive, [])]
        parts.update = update
        return parts
