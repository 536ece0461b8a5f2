"""Jira connections, their sites, and the audit trail.

JiraConnection
    One per (user, Atlassian account_id). Holds the encrypted token pair, its expiry,
    the refresh state machine (status, failures, backoff), and the refresh claim
    (claim_id, claimed_until) with a version bumped on every token write, so that one
    worker at a time refreshes and a stale worker can never overwrite a newer pair.
JiraSite
    The connection's Jira sites from accessible-resources; the user can disable one.
ConnectionEvent
    Audit trail with actor and non-secret detail; outlives the connection.
JiraWebhook
    A dynamic webhook the portal keeps registered for one site of a connection (one per
    slot: issues the user is assignee of, issues they reported), with its health.
JiraEvent
    An event Jira delivered through one of those webhooks (the My Jira activity panel);
    unique per site and delivery identifier, kept WEBHOOK_EVENT_RETENTION_DAYS.
MyJiraVisit
    When the user last opened My Jira: issues changed since are marked.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import ClassVar

from django.conf import settings
from django.db import models
from django.db.models import Q

from integrations import clock
from integrations.fields import TokenField

# Atlassian forces re-consent this long after the first consent, whatever happens.
CONSENT_LIFETIME = timedelta(days=365)
# The settings page counts the days down from here.
CONSENT_COUNTDOWN = timedelta(days=30)


class ConnectionStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    REFRESH_FAILING = "refresh_failing", "Failing (retrying)"
    NEEDS_RECONNECT = "needs_reconnect", "Needs reconnect"


class JiraConnection(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jira_connections")
    account_id = models.CharField(max_length=128)
    account_name = models.CharField(max_length=255, blank=True)
    account_email = models.EmailField(max_length=254, blank=True)
    account_avatar_url = models.URLField(max_length=1000, blank=True)

    access_token = TokenField(null=True, editable=False)
    refresh_token = TokenField(null=True, editable=False)
    scopes = models.JSONField(default=list, blank=True)
    access_token_expires_at = models.DateTimeField(null=True, blank=True)
    # When Atlassian last handed us a refresh token: 90 idle days kill it.
    tokens_issued_at = models.DateTimeField()
    first_consented_at = models.DateTimeField()
    last_refreshed_at = models.DateTimeField(null=True, blank=True)
    # Routine refreshes are counted here, not written to the audit trail one row each.
    refresh_count = models.PositiveBigIntegerField(default=0)
    # When portal code last called Jira with this connection (recorded at most every few
    # minutes): the scheduled run keeps used connections warm and the rest merely alive.
    last_used_at = models.DateTimeField(null=True, blank=True)
    # Atlassian's 365-day consent limit: 0 none sent, 1 the 14-day warning, 2 the 1-day one.
    consent_warnings_sent = models.PositiveSmallIntegerField(default=0)

    status = models.CharField(max_length=32, choices=ConnectionStatus.choices, default=ConnectionStatus.ACTIVE)
    status_reason = models.CharField(max_length=64, blank=True)
    status_message = models.CharField(max_length=500, blank=True)
    failure_count = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    version = models.PositiveBigIntegerField(default=1)
    claim_id = models.UUIDField(null=True, blank=True, editable=False)
    claimed_until = models.DateTimeField(null=True, blank=True, editable=False)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["user", "account_id"], name="integrations_connection_user_account"),
        ]
        indexes: ClassVar[list[models.Index]] = [
            # refresh_tokens finds due work through these, one range scan per branch of
            # the due rule (lifecycle.due): cost grows with the due rows, not the table.
            # No index leads with the access token's expiry: idle connections' tokens have
            # all expired, so its range is nearly the whole table, and PostgreSQL used it to
            # order the warm claim (250 ms a claim at 100,000 connections, docs/benchmarks.md).
            models.Index(
                fields=["tokens_issued_at"],
                name="conn_due_idle_idx",
                condition=~Q(status="needs_reconnect"),
            ),
            # The "warm" branch: a range on recent use, the expiry read from the index.
            models.Index(
                fields=["last_used_at", "access_token_expires_at"],
                name="conn_due_warm_idx",
                condition=~Q(status="needs_reconnect"),
            ),
            # The "retry" branch: failing connections whose backoff has ended.
            models.Index(
                fields=["next_attempt_at"],
                name="conn_due_retry_idx",
                condition=Q(status="refresh_failing"),
            ),
            # Consent-expiry warnings and the admin's "reconnect by" filter.
            models.Index(
                fields=["first_consented_at"],
                name="conn_consent_idx",
                condition=~Q(status="needs_reconnect"),
            ),
        ]

    def __str__(self) -> str:
        return f"Jira connection {self.pk} ({self.account_name or self.account_id})"

    def __repr__(self) -> str:
        return f"<JiraConnection pk={self.pk} account_id={self.account_id!r} status={self.status!r} v{self.version}>"

    @property
    def reconnect_by(self) -> datetime:
        return self.first_consented_at + CONSENT_LIFETIME

    @property
    def reconnect_countdown(self) -> int | None:
        """Whole days left to reconnect once inside the last CONSENT_COUNTDOWN, else None."""
        left = self.reconnect_by - clock.now()
        if left > CONSENT_COUNTDOWN or self.needs_reconnect:
            return None
        return max(0, left.days)

    @property
    def needs_reconnect(self) -> bool:
        return self.status == ConnectionStatus.NEEDS_RECONNECT


class JiraSite(models.Model):
    connection = models.ForeignKey(JiraConnection, on_delete=models.CASCADE, related_name="sites")
    cloud_id = models.CharField(max_length=128)
    name = models.CharField(max_length=255, blank=True)
    url = models.URLField(max_length=500)
    avatar_url = models.URLField(max_length=1000, blank=True)
    scopes = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    # Webhook upkeep (lifecycle.webhooks): when the scheduled run next looks at this
    # site's webhooks (null = as soon as possible), and the claim one worker holds while
    # it does, so two runs never register the same webhooks twice.
    webhooks_next_check_at = models.DateTimeField(null=True, blank=True, editable=False)
    webhooks_claim_id = models.UUIDField(null=True, blank=True, editable=False)
    webhooks_claimed_until = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("name", "url")
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["connection", "cloud_id"], name="integrations_site_connection_cloud"),
        ]
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["webhooks_next_check_at"], name="site_webhooks_check_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.url})"


class EventKind(models.TextChoices):
    CONNECTED = "connected", "Connected"
    RECONNECTED = "reconnected", "Reconnected"
    REFRESHED = "refreshed", "Refreshed"
    REFRESH_FAILED = "refresh_failed", "Refresh failed"
    RECOVERED = "recovered", "Recovered"
    CONSENT_EXPIRY_WARNED = "consent_expiry_warned", "Warned: consent expires soon"
    NEEDS_RECONNECT = "needs_reconnect", "Needs reconnect"
    DISCONNECTED = "disconnected", "Disconnected"
    KEYS_ROTATED = "keys_rotated", "Keys rotated"
    SITE_TOGGLED = "site_toggled", "Site enabled/disabled"
    STAFF_REFRESH = "staff_refresh", "Staff: refresh now"
    STAFF_MARK_NEEDS_RECONNECT = "staff_mark_needs_reconnect", "Staff: marked needs reconnect"
    STAFF_DISCONNECT = "staff_disconnect", "Staff: disconnected"


class Actor(models.TextChoices):
    USER = "user", "User"
    STAFF = "staff", "Staff"
    SYSTEM = "system", "System"


class ConnectionEvent(models.Model):
    # SET_NULL, and the account/user copied in: the trail must outlive a disconnect.
    connection = models.ForeignKey(
        JiraConnection, on_delete=models.SET_NULL, null=True, blank=True, related_name="events"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="jira_events"
    )
    account_id = models.CharField(max_length=128, blank=True)
    kind = models.CharField(max_length=40, choices=EventKind.choices)
    actor = models.CharField(max_length=16, choices=Actor.choices, default=Actor.SYSTEM)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    message = models.CharField(max_length=500, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ("-created_at", "-id")

    def __str__(self) -> str:
        return f"{self.get_kind_display()} by {self.actor} at {self.created_at:%Y-%m-%d %H:%M:%S}"


class WebhookSlot(models.TextChoices):
    """Which of the user's issues a webhook covers: Jira's jqlFilter subset has no
    currentUser(), so each names the account id, one field per webhook."""

    ASSIGNEE = "assignee", "Assigned to the user"
    REPORTER = "reporter", "Reported by the user"


class WebhookStatus(models.TextChoices):
    PENDING = "pending", "Not registered yet"
    ACTIVE = "active", "Registered"
    FAILING = "failing", "Failing (retrying)"


class JiraWebhook(models.Model):
    connection = models.ForeignKey(JiraConnection, on_delete=models.CASCADE, related_name="webhooks")
    site = models.ForeignKey(JiraSite, on_delete=models.CASCADE, related_name="webhooks")
    slot = models.CharField(max_length=16, choices=WebhookSlot.choices)
    # Atlassian's id while registered; null before, and after Atlassian forgot it.
    webhook_id = models.BigIntegerField(null=True, blank=True)
    events = models.JSONField(default=list, blank=True)
    jql_filter = models.CharField(max_length=500, blank=True)
    status = models.CharField(max_length=16, choices=WebhookStatus.choices, default=WebhookStatus.PENDING)
    registered_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_extended_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    failure_count = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_delivery_at = models.DateTimeField(null=True, blank=True)
    delivery_count = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("site_id", "slot")
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["site", "slot"], name="integrations_webhook_site_slot"),
        ]
        indexes: ClassVar[list[models.Index]] = [
            # The receiver maps matchedWebhookIds to rows through this.
            models.Index(fields=["webhook_id"], name="webhook_atlassian_id_idx"),
        ]

    def __str__(self) -> str:
        return f"Webhook {self.webhook_id or '(unregistered)'} ({self.get_slot_display()})"

    def expired(self, *, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


class JiraEvent(models.Model):
    """One Jira event delivered to one connection's site; never holds the JWT."""

    connection = models.ForeignKey(JiraConnection, on_delete=models.CASCADE, related_name="jira_events")
    site = models.ForeignKey(JiraSite, on_delete=models.CASCADE, related_name="jira_events")
    # X-Atlassian-Webhook-Identifier: stable across Jira's retries, so a retry stores nothing new.
    identifier = models.CharField(max_length=128)
    event_type = models.CharField(max_length=64)
    issue_key = models.CharField(max_length=64, blank=True)
    issue_summary = models.CharField(max_length=500, blank=True)
    actor_name = models.CharField(max_length=255, blank=True)
    actor_account_id = models.CharField(max_length=128, blank=True)
    # When Jira says it happened (payload `timestamp`), and when it reached us.
    occurred_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ("-created_at", "-id")
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["site", "identifier"], name="integrations_jiraevent_site_identifier"),
        ]
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["site", "-created_at"], name="jiraevent_site_recent_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.issue_key} at {self.created_at:%Y-%m-%d %H:%M:%S}"


class MyJiraVisit(models.Model):
    """The user's views of My Jira. Per user, not per session: the marks must mean the
    same on every device and survive a sign-out. `previous_seen_at` is the visit before
    the current one: what the marks count from, also on the current visit's next pages."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True)
    seen_at = models.DateTimeField()
    previous_seen_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"My Jira seen at {self.seen_at:%Y-%m-%d %H:%M:%S}"
