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
            # Expiry alone: the admin's expiry filter and the one-off due list of old runs.
            models.Index(
                fields=["access_token_expires_at"],
                name="conn_due_expiry_idx",
                condition=~Q(status="needs_reconnect"),
            ),
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
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("name", "url")
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["connection", "cloud_id"], name="integrations_site_connection_cloud"),
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
