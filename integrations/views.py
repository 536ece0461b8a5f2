"""Connect, callback, disconnect, site switches and the webhook receiver: thin views
over the services."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.html import format_html
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.models import User
from integrations import atlassian, oauth
from integrations.lifecycle.config import jira_configured
from integrations.lifecycle.connect import (
    CONNECTED_APPS_URL,
    connection_create_from_callback,
    connection_disconnect,
    site_set_enabled,
)
from integrations.lifecycle.deliveries import delivery_receive
from integrations.lifecycle.webhooks import webhooks_enabled
from integrations.models import Actor, JiraConnection, JiraSite
from jiraconnect import ratelimits

logger = logging.getLogger(__name__)

View = Callable[..., HttpResponse]


def no_referrer(view: View) -> View:
    """The callback URL holds a code and a state: never let it travel as a Referer."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response["Referrer-Policy"] = "no-referrer"
        return response

    return wrapped


def _flow_error(request: HttpRequest, *, status: int, title: str, message: str, retry: bool = True) -> HttpResponse:
    return render(
        request,
        "integrations/flow_error.html",
        {"title": title, "message": message, "retry": retry and jira_configured()},
        status=status,
    )


def _not_configured(request: HttpRequest) -> HttpResponse:
    return _flow_error(
        request,
        status=503,
        title="Jira is not configured on this portal",
        message="The portal's operator has not set up an Atlassian app yet (ATLASSIAN_CLIENT_ID is unset).",
        retry=False,
    )


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def provider_text(value: str | None, *, limit: int = 200) -> str:
    """Text from Atlassian's redirect is untrusted: strip control bytes, cap its length.
    (Templates escape it; this keeps a 10 KB description from filling the page.)"""
    cleaned = _CONTROL.sub("", value or "").strip()
    return cleaned[:limit] + ("…" if len(cleaned) > limit else "")


@require_POST
@login_required
@ratelimits.rate_limited(*ratelimits.JIRA_CONNECT)
@never_cache
def connect(request: HttpRequest) -> HttpResponse:
    if not jira_configured():
        return _not_configured(request)
    assert isinstance(request.user, User)
    state = oauth.state_issue(session=request.session, user_id=request.user.pk)
    return HttpResponseRedirect(atlassian.authorize_url(state=state))


@sensitive_variables("query")
def _take_query(request: HttpRequest) -> QueryDict:
    """Lift the code and state off the request before anything can fail: error reports
    (request URL, GET, QUERY_STRING, the request's repr in every frame), debug pages and
    APM tools all read them from there, and sensitive_variables does not reach them."""
    query = request.GET.copy()
    request.GET = QueryDict()
    request.META["QUERY_STRING"] = ""
    for key in ("REQUEST_URI", "RAW_URI"):  # uWSGI, gunicorn: the raw request line
        if key in request.META:
            request.META[key] = str(request.META[key]).split("?", 1)[0]
    return query


@require_GET
@never_cache
@no_referrer
@sensitive_variables("code", "query")
def callback(request: HttpRequest) -> HttpResponse:
    query = _take_query(request)
    # Not @login_required: its redirect would carry the code into the login URL.
    if not request.user.is_authenticated:
        return _flow_error(
            request,
            status=403,
            title="You are not signed in",
            message="Sign in to the portal, then connect Jira again from your settings page.",
            retry=False,
        )
    assert isinstance(request.user, User)
    if not jira_configured():
        return _not_configured(request)
    try:
        oauth.state_consume(session=request.session, state=query.get("state"), user_id=request.user.pk)
    except oauth.StateError as exc:
        logger.warning("Jira callback refused: %s (user=%s)", exc.reason, request.user.pk)
        return _flow_error(request, status=400, title="This Jira connection attempt is not valid", message=exc.message)

    error = query.get("error")
    if error is not None:
        if error == "access_denied":
            messages.info(request, "You declined to connect Jira. Nothing was changed.")
        else:
            messages.error(
                request,
                f"Atlassian could not complete the connection ({provider_text(error, limit=40)}): "
                f"{provider_text(query.get('error_description'))}",
            )
        return redirect("settings")

    code = query.get("code", "")
    if not code or len(code) > 4096:
        return _flow_error(
            request, status=400, title="Atlassian sent no authorization code", message="Please start again."
        )
    try:
        result = connection_create_from_callback(user=request.user, code=code)
    except atlassian.MissingRefreshTokenError as exc:
        logger.error("Jira connect: %s", exc.message)
        return _flow_error(
            request,
            status=502,
            title="Jira could not be connected",
            message="This portal is set up without offline access, so the connection could not be kept. "
            "Please tell the portal's operator: " + exc.message,
            retry=False,
        )
    except atlassian.ClientCredentialsError:
        logger.error("Jira connect: Atlassian refused the portal's client credentials.")
        return _flow_error(
            request,
            status=502,
            title="Jira could not be connected",
            message="Atlassian refused this portal's app credentials. The operator has been told; "
            "please try again later.",
            retry=False,
        )
    except atlassian.CodeInvalidError:
        return _flow_error(
            request,
            status=400,
            title="The connection attempt expired",
            message="Atlassian no longer accepts this sign-in (it was used already or took too long). "
            "Please start again.",
        )
    except atlassian.TransientError as exc:
        logger.warning("Jira connect failed, transient: %s", exc.message)
        return _flow_error(
            request,
            # 504 when no answer came at all; a garbled answer is a bad gateway.
            status=504 if exc.status is None and not isinstance(exc, atlassian.InvalidResponseError) else 502,
            title="Atlassian is not answering properly",
            message=f"{exc.message} Nothing was saved; please try again in a minute.",
        )
    except atlassian.AtlassianError as exc:
        logger.warning("Jira connect failed: %s (%s)", exc.reason, exc.message)
        return _flow_error(
            request,
            status=502,
            title="Jira could not be connected",
            message=f"{exc.message} Nothing was saved.",
        )
    connection = result.connection
    name = connection.account_name or connection.account_email or "your Atlassian account"
    verb = "Connected" if result.created else "Reconnected"
    messages.success(request, f"{verb} Jira as {name}.")
    if result.site_count == 0:
        messages.warning(
            request,
            "Your Atlassian account has no Jira sites this app can reach. Ask a site admin for access, "
            "then press Reconnect.",
        )
    return redirect("settings")


def _own_connection(request: HttpRequest, connection_id: int) -> JiraConnection:
    # Another user's connection is a 404, never a 403: no hint that it exists.
    return get_object_or_404(
        JiraConnection.objects.defer("access_token", "refresh_token"), pk=connection_id, user_id=request.user.pk
    )


@require_http_methods(["GET", "POST"])
@login_required
@never_cache
def disconnect(request: HttpRequest, connection_id: int) -> HttpResponse:
    connection = _own_connection(request, connection_id)
    if request.method == "GET":
        return render(
            request,
            "integrations/disconnect_confirm.html",
            {"connection": connection, "connected_apps_url": CONNECTED_APPS_URL},
        )
    assert isinstance(request.user, User)
    connection_disconnect(connection=connection, actor=Actor.USER, actor_user=request.user)
    # Built as safe HTML: messages are shown as plain text (never urlized, since some
    # carry Atlassian's words), so the one link we mean is written out here.
    messages.success(
        request,
        format_html(
            "Disconnected {}: its tokens are deleted from this portal. Atlassian offers apps no way to revoke "
            'your consent; to remove it, visit <a href="{}" rel="noopener noreferrer">{}</a> and remove this app.',
            connection.account_name or "your Atlassian account",
            CONNECTED_APPS_URL,
            CONNECTED_APPS_URL,
        ),
    )
    return redirect("settings")


@require_POST
@login_required
def site_enabled(request: HttpRequest, site_id: int) -> HttpResponse:
    assert isinstance(request.user, User)
    enabled = request.POST.get("enabled")
    if enabled not in ("0", "1"):
        return HttpResponse("enabled must be 0 or 1", status=400, content_type="text/plain")
    try:
        site = site_set_enabled(user=request.user, site_id=site_id, enabled=enabled == "1")
    except JiraSite.DoesNotExist:
        raise Http404("No such site") from None
    messages.success(request, f"{site.name or site.url} is now {'shown' if site.enabled else 'hidden'} in My Jira.")
    return redirect("settings")


# Jira's deliveries are an issue or comment and its fields: far below this.
MAX_DELIVERY_BYTES = 256 * 1024


def _plain(status: int, text: str) -> HttpResponse:
    return HttpResponse(text, status=status, content_type="text/plain")


@csrf_exempt  # Jira cannot send a CSRF token: the signed JWT is what authenticates it.
@require_POST
@never_cache
@sensitive_variables("authorization")
def webhook(request: HttpRequest) -> HttpResponse:
    """Jira's webhook deliveries: 401 and nothing stored unless signed with our client
    secret; 413 past MAX_DELIVERY_BYTES; 200 for a stored event, a retry of one, or one
    for a webhook we no longer track (so Jira stops retrying it)."""
    if not webhooks_enabled() or not jira_configured():
        raise Http404("Webhooks are off")
    length = request.META.get("CONTENT_LENGTH") or "0"
    if not length.isdigit() or int(length) > MAX_DELIVERY_BYTES:
        return _plain(413, "Body too large.")
    body = request.read(MAX_DELIVERY_BYTES + 1)
    if len(body) > MAX_DELIVERY_BYTES:
        return _plain(413, "Body too large.")
    authorization = request.headers.get("Authorization")
    # Out of the request before anything can fail: error reports print its headers.
    request.META.pop("HTTP_AUTHORIZATION", None)
    try:
        result = delivery_receive(
            authorization=authorization,
            identifier=request.headers.get("X-Atlassian-Webhook-Identifier"),
            retry=request.headers.get("X-Atlassian-Webhook-Retry"),
            body=body,
        )
    except atlassian.DeliveryError as exc:
        logger.warning("Jira delivery refused (%d): %s", exc.status, exc.message)
        return _plain(exc.status, exc.message)
    return _plain(200, "stored" if result.stored else "ok")
