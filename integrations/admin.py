"""Support staff's view of Jira connections and their history.

Everything shown is read-only: tokens, versions and refresh claims belong to the
services, so the tokens are neither loaded, shown, searchable nor in any form, and
the change page cannot be saved. Staff act only through the actions below, which call
the services, so every action leaves a ConnectionEvent with actor "staff".
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any, ClassVar

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Prefetch, QuerySet
from django.forms.models import BaseInlineFormSet, ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from accounts.models import User
from integrations import clock
from integrations.lifecycle.config import ConfigurationError
from integrations.lifecycle.connect import connection_disconnect
from integrations.lifecycle.due import DEFAULT_RULE
from integrations.lifecycle.refresh import RefreshOutcome, RefreshResult, connection_refresh_now
from integrations.lifecycle.status import connection_mark_needs_reconnect
from integrations.lifecycle.webhooks import scopes_missing
from integrations.models import CONSENT_LIFETIME, Actor, ConnectionEvent, JiraConnection, JiraSite, JiraWebhook
from integrations.webhook_health import unhealthy

TOKEN_FIELDS = ("access_token", "refresh_token")
# Never in a form, nor shown: the secrets, and the refresh claim only the services hold.
HIDDEN_FIELDS = (*TOKEN_FIELDS, "claim_id", "claimed_until")
# What support reads beside the facts: the policies behind them, one sentence each.
FIELDSET_NOTES = {
    "Tokens (values are never shown)": (
        "The scheduled run refreshes a connection used in the last 24 hours shortly before its access token "
        "expires, any connection whose refresh token has been unused for 30 days, and failing ones once their "
        "backoff ends; every other connection is refreshed the next time its user calls Jira."
    ),
    "Consent": "Atlassian ends every grant a year after consent; the user is emailed 14 days and 1 day before.",
}
EVENTS_SHOWN = 50
# Refresh now calls Atlassian once per connection inside the request: bulk work belongs
# to the refresh_tokens command.
MAX_REFRESH_NOW = 50


def _staff(request: HttpRequest) -> User:
    assert isinstance(request.user, User)
    return request.user


# --- Filters --------------------------------------------------------------------------


class AccessTokenExpiryFilter(admin.SimpleListFilter):
    title = "access token expires"
    parameter_name = "expires"
    windows = {"1h": timedelta(hours=1)}

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [
            ("expired", "Already expired"),
            ("due", "Due for refresh (the refresh_tokens rule)"),
            ("1h", "Within 1 hour"),
            ("unknown", "Unknown"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now = clock.now()
        value = self.value()
        if value == "expired":
            return queryset.filter(access_token_expires_at__lte=now)
        if value == "due":
            return queryset.filter(DEFAULT_RULE.filter(now=now))
        if value in self.windows:
            return queryset.filter(
                access_token_expires_at__gt=now, access_token_expires_at__lte=now + self.windows[value]
            )
        if value == "unknown":
            return queryset.filter(access_token_expires_at__isnull=True)
        return queryset


class ReconnectByFilter(admin.SimpleListFilter):
    """Atlassian asks for consent again a year after it was given, refresh or not."""

    title = "reconnect by"
    parameter_name = "reconnect_by"
    windows = {"7d": timedelta(days=7), "30d": timedelta(days=30)}

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [("passed", "Already passed"), ("7d", "Within 7 days"), ("30d", "Within 30 days")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        # reconnect_by = first_consented_at + CONSENT_LIFETIME, compared on the column.
        lapses_now = clock.now() - CONSENT_LIFETIME
        value = self.value()
        if value == "passed":
            return queryset.filter(first_consented_at__lte=lapses_now)
        if value in self.windows:
            return queryset.filter(
                first_consented_at__gt=lapses_now, first_consented_at__lte=lapses_now + self.windows[value]
            )
        return queryset


class WebhookHealthFilter(admin.SimpleListFilter):
    """Webhooks that need a look: failing, close to expiry, or never registered."""

    title = "webhooks"
    parameter_name = "webhooks"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [("unhealthy", "Unhealthy (failing, expiring, unregistered)"), ("none", "None registered")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == "unhealthy":
            bad = JiraWebhook.objects.filter(unhealthy(now=clock.now())).values("connection_id")
            return queryset.filter(pk__in=bad)
        if value == "none":
            return queryset.exclude(pk__in=JiraWebhook.objects.filter(webhook_id__isnull=False).values("connection_id"))
        return queryset


class MissingScopesFilter(admin.SimpleListFilter):
    """Connections granted before ATLASSIAN_SCOPES last grew (scope drift): they work with
    what they have, and their users are asked to reconnect for the rest."""

    title = "scopes"
    parameter_name = "scopes"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [("missing", "Missing configured scopes (reconnect needed)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() != "missing":
            return queryset
        # Compared in Python: SQLite has no JSON containment lookup. Only ids and scopes load.
        drifted = [
            pk
            for pk, scopes in queryset.values_list("pk", "scopes")
            if scopes_missing(JiraConnection(scopes=scopes or []))
        ]
        return queryset.filter(pk__in=drifted)


# --- Inlines --------------------------------------------------------------------------


class _ReadOnlyInline(admin.TabularInline[Any, JiraConnection]):
    extra = 0
    max_num = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: JiraConnection | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: JiraConnection | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: JiraConnection | None = None) -> bool:
        return False


class JiraSiteInline(_ReadOnlyInline):
    # Read-only: whether a site shows in My Jira is the user's choice (site_set_enabled).
    model = JiraSite
    fields = ("name", "url", "cloud_id", "enabled", "scopes", "updated_at")
    readonly_fields = fields


class JiraWebhookInline(_ReadOnlyInline):
    """Each site's webhooks and their health; the scheduled run keeps them alive."""

    model = JiraWebhook
    fields = (
        "site",
        "slot",
        "webhook_id",
        "status",
        "expires_at",
        "last_extended_at",
        "last_delivery_at",
        "delivery_count",
        "last_error",
        "last_error_at",
        "failure_count",
        "next_attempt_at",
        "jql_filter",
    )
    readonly_fields = fields
    verbose_name_plural = "Jira webhooks (kept alive by refresh_tokens)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).select_related("site")


class NewestEventsFormSet(BaseInlineFormSet[ConnectionEvent, JiraConnection, ModelForm[ConnectionEvent]]):
    """Only the newest events: a years-old connection must not render thousands of rows.
    The full, paginated history is one link away (event_history)."""

    def get_queryset(self) -> QuerySet[ConnectionEvent]:
        if not hasattr(self, "_newest"):
            self._newest = super().get_queryset()[:EVENTS_SHOWN]
        return self._newest


class ConnectionEventInline(_ReadOnlyInline):
    model = ConnectionEvent
    formset = NewestEventsFormSet
    fields = ("created_at", "kind", "actor", "actor_user", "message", "detail")
    readonly_fields = fields
    ordering = ("-created_at", "-id")
    verbose_name_plural = f"Events (newest {EVENTS_SHOWN} first)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).select_related("actor_user")


# --- Connections ----------------------------------------------------------------------


@admin.register(JiraConnection)
class JiraConnectionAdmin(admin.ModelAdmin[JiraConnection]):
    list_display = (
        "id",
        "user_email",
        "atlassian_account",
        "site_urls",
        "status_with_reason",
        "access_token_expires_at",
        "last_refreshed_at",
        "last_used_at",
        "failure_count",
        "reconnect_deadline",
    )
    list_display_links = ("id", "user_email")
    list_filter = ("status", AccessTokenExpiryFilter, ReconnectByFilter, WebhookHealthFilter, MissingScopesFilter)
    search_fields = (
        "user__email",
        "account_email",
        "account_name",
        "account_id",
        "sites__url",
        "sites__cloud_id",
    )
    search_help_text = "User email, Atlassian email, name or account id, site URL or cloud id."
    ordering = ("-id",)
    exclude = HIDDEN_FIELDS
    field_groups = {
        "Atlassian account": ("user", "account_id", "account_name", "account_email", "scopes", "scopes_not_granted"),
        "Status": ("status", "status_reason", "status_message", "failure_count", "next_attempt_at"),
        "Tokens (values are never shown)": (
            "refresh_due",
            "last_used_at",
            "access_token_expires_at",
            "tokens_issued_at",
            "last_refreshed_at",
            "refresh_count",
            "version",
        ),
        "Consent": ("first_consented_at", "reconnect_deadline", "consent_warnings_sent"),
        "Record": ("created_at", "updated_at", "event_history"),
    }
    fieldsets = tuple(
        (title, {"fields": fields, "description": FIELDSET_NOTES.get(title, "")})
        for title, fields in field_groups.items()
    )
    readonly_fields = tuple(field for fields in field_groups.values() for field in fields)
    inlines = (JiraSiteInline, JiraWebhookInline, ConnectionEventInline)
    actions = ("refresh_now", "mark_needs_reconnect", "disconnect")

    def get_queryset(self, request: HttpRequest) -> QuerySet[JiraConnection]:
        # Tokens are never decrypted for these pages; sites come in one query per page.
        return (
            super()
            .get_queryset(request)
            .defer(*TOKEN_FIELDS)
            .select_related("user")
            .prefetch_related(Prefetch("sites", queryset=JiraSite.objects.order_by("name", "url")))
        )

    # Connections come from OAuth only, leave through Disconnect (which records an
    # event), and the object form is never saved: a save would write back a stale
    # version/status read when the page loaded. Change permission gates the actions.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: JiraConnection | None = None) -> bool:
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: JiraConnection | None = None) -> bool:
        return False

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        context = {"jira_actions": self._action_buttons(request), **(extra_context or {})}
        return super().change_view(request, object_id, form_url, context)

    def _action_buttons(self, request: HttpRequest) -> list[tuple[str, str]]:
        allowed = self.get_actions(request)
        return [(name, str(action[2])) for name in self.actions if (action := allowed.get(name))]

    @admin.display(description="User", ordering="user__email")
    def user_email(self, obj: JiraConnection) -> str:
        return obj.user.email

    @admin.display(description="Atlassian account", ordering="account_name")
    def atlassian_account(self, obj: JiraConnection) -> str:
        name = obj.account_name or obj.account_id
        return f"{name} <{obj.account_email}>" if obj.account_email else name

    @admin.display(description="Sites")
    def site_urls(self, obj: JiraConnection) -> str:
        return ", ".join(site.url for site in obj.sites.all())

    @admin.display(description="Status", ordering="status")
    def status_with_reason(self, obj: JiraConnection) -> str:
        label = obj.get_status_display()
        return f"{label} ({obj.status_reason})" if obj.status_reason else label

    @admin.display(description="Due for refresh")
    def refresh_due(self, obj: JiraConnection) -> str:
        reason = DEFAULT_RULE.reason(
            status=obj.status,
            expires_at=obj.access_token_expires_at,
            tokens_issued_at=obj.tokens_issued_at,
            last_used_at=obj.last_used_at,
            next_attempt_at=obj.next_attempt_at,
            now=clock.now(),
        )
        return f"Yes: {reason}" if reason else "No"

    @admin.display(description="Configured scopes not granted")
    def scopes_not_granted(self, obj: JiraConnection) -> str:
        missing = scopes_missing(obj)
        return f"{', '.join(missing)} (the user is asked to reconnect)" if missing else "None"

    @admin.display(description="Reconnect by", ordering="first_consented_at")
    def reconnect_deadline(self, obj: JiraConnection) -> str:
        return f"{obj.reconnect_by:%Y-%m-%d} UTC"

    @admin.display(description="History")
    def event_history(self, obj: JiraConnection) -> SafeString:
        url = reverse("admin:integrations_connectionevent_changelist")
        return format_html('<a href="{}?connection__id__exact={}">All {} events</a>', url, obj.pk, obj.events.count())

    # --- Actions ----------------------------------------------------------------------

    def _back(self, request: HttpRequest, queryset: QuerySet[JiraConnection]) -> HttpResponse | None:
        """From the change page's buttons, return to that page; else to the list."""
        if request.POST.get("_from") == "change":
            pk = request.POST.get(helpers.ACTION_CHECKBOX_NAME)
            if pk and queryset.filter(pk=pk).exists():
                return HttpResponseRedirect(reverse("admin:integrations_jiraconnection_change", args=[pk]))
        return None

    @admin.action(description="Refresh now", permissions=["change"])
    def refresh_now(self, request: HttpRequest, queryset: QuerySet[JiraConnection]) -> HttpResponse | None:
        staff = _staff(request)
        if queryset.count() > MAX_REFRESH_NOW:
            self.message_user(
                request,
                f"Refresh now handles at most {MAX_REFRESH_NOW} connections at a time; nothing was done. "
                "Use the refresh_tokens command for bulk refreshes.",
                messages.ERROR,
            )
            return None
        for connection in queryset.order_by("pk"):
            try:
                result = connection_refresh_now(connection_id=connection.pk, staff=staff)
            except ConfigurationError as exc:
                self.message_user(
                    request,
                    f"Refresh stopped, nothing was changed: {exc} This is the portal's configuration, "
                    "not the user's connection.",
                    messages.ERROR,
                )
                break
            self._report_refresh(request, connection, result)
        return self._back(request, queryset)

    # What staff read after "Refresh now", one message per outcome.
    REFRESH_REPORTS: ClassVar[dict[RefreshOutcome, tuple[str, int]]] = {
        RefreshOutcome.REFRESHED: ("refreshed.", messages.SUCCESS),
        RefreshOutcome.NEEDS_RECONNECT: ("needs reconnect. {message}", messages.WARNING),
        RefreshOutcome.TRANSIENT_FAILURE: ("not refreshed: {message}{retry}", messages.WARNING),
        RefreshOutcome.GONE: ("no longer exists.", messages.WARNING),
        RefreshOutcome.CLAIMED_ELSEWHERE: ("another refresh was under way; nothing was done.", messages.INFO),
        RefreshOutcome.SUPERSEDED: (
            "not stored: newer tokens were written meanwhile (a reconnect or another refresh), and they stand.",
            messages.INFO,
        ),
        RefreshOutcome.NOT_DUE: ("nothing was done.", messages.INFO),
    }

    def _report_refresh(self, request: HttpRequest, connection: JiraConnection, result: RefreshResult) -> None:
        # The service recorded the staff event for every outcome already.
        template, level = self.REFRESH_REPORTS[result.outcome]
        retry = f" Next automatic try at {result.retry_at:%Y-%m-%d %H:%M} UTC." if result.retry_at else ""
        self.message_user(request, f"{connection}: {template.format(message=result.message, retry=retry)}", level)

    @admin.action(description="Mark needs reconnect", permissions=["change"])
    def mark_needs_reconnect(self, request: HttpRequest, queryset: QuerySet[JiraConnection]) -> HttpResponse | None:
        staff = _staff(request)
        for connection in queryset.order_by("pk"):
            changed = connection_mark_needs_reconnect(
                connection_id=connection.pk,
                reason="staff",
                message="Support marked this connection for reconnection.",
                actor=Actor.STAFF,
                actor_user=staff,
            )
            if changed:
                self.message_user(request, f"{connection}: marked needs reconnect; its user was emailed.")
            else:
                self.message_user(request, f"{connection}: already needs reconnect.", messages.INFO)
        return self._back(request, queryset)

    @admin.action(description="Disconnect (delete its tokens)", permissions=["change"])
    def disconnect(self, request: HttpRequest, queryset: QuerySet[JiraConnection]) -> HttpResponse | None:
        if request.POST.get("post") != "yes":
            return self._disconnect_confirmation(request, queryset)
        staff = _staff(request)
        names = []
        for connection in queryset.order_by("pk"):
            connection_disconnect(connection=connection, actor=Actor.STAFF, actor_user=staff)
            names.append(str(connection))
        self.message_user(
            request,
            f"Disconnected {len(names)}: {', '.join(names)}. Their history stays under Connection events.",
            messages.SUCCESS,
        )
        return None

    def _disconnect_confirmation(self, request: HttpRequest, queryset: QuerySet[JiraConnection]) -> HttpResponse:
        connections: Iterable[JiraConnection] = list(queryset.order_by("pk"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Disconnect these Jira connections?",
            "subtitle": None,
            "opts": self.opts,
            "connections": connections,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "changelist_url": reverse("admin:integrations_jiraconnection_changelist"),
        }
        return TemplateResponse(request, "admin/integrations/jiraconnection/disconnect_confirmation.html", context)


# --- History --------------------------------------------------------------------------


@admin.register(ConnectionEvent)
class ConnectionEventAdmin(admin.ModelAdmin[ConnectionEvent]):
    """The audit trail, read-only; it outlives disconnected connections."""

    list_display = ("created_at", "kind", "actor", "actor_user", "user", "account_id", "connection_link", "message")
    list_filter = ("kind", "actor")
    search_fields = ("account_id", "user__email", "actor_user__email")
    search_help_text = "Atlassian account id, user email or staff email."
    list_per_page = 100
    fields = ("created_at", "kind", "actor", "actor_user", "user", "account_id", "connection", "message", "detail")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[ConnectionEvent]:
        return (
            super()
            .get_queryset(request)
            .select_related("user", "actor_user", "connection")
            .defer(*(f"connection__{name}" for name in TOKEN_FIELDS))
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ConnectionEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ConnectionEvent | None = None) -> bool:
        return False

    @admin.display(description="Connection")
    def connection_link(self, obj: ConnectionEvent) -> str:
        if obj.connection is None:
            return "(disconnected)"
        url = reverse("admin:integrations_jiraconnection_change", args=[obj.connection.pk])
        return format_html('<a href="{}">{}</a>', url, obj.connection)
