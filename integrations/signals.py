"""Signals portal code can connect to.

jira_event_received
    Sent once per Jira event the receiver stored: a verified delivery, mapped to one of
    the user's connections and sites, and not a retry of one already stored. Keyword
    arguments: `connection` (JiraConnection, tokens not loaded), `site` (JiraSite) and
    `event` (lifecycle.deliveries.ParsedEvent: identifier, event_type, issue_key,
    issue_id, issue_summary, actor_name, actor_account_id, occurred_at, payload).
    The sender is JiraEvent. It runs inside the webhook request, which Jira expects to
    end within seconds: do quick work here and anything slow elsewhere (a queue, the
    next scheduled run). A receiver that raises is logged and does not fail the delivery.

    from django.dispatch import receiver
    from integrations.signals import jira_event_received

    @receiver(jira_event_received)
    def on_jira_event(sender, *, connection, site, event, **kwargs):
        if event.event_type == "jira:issue_updated":
            ...
"""

from __future__ import annotations

from django.dispatch import Signal

jira_event_received = Signal()
