"""My Jira's reaction to a stored Jira event (the `jira_event_received` signal)."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from integrations.models import JiraConnection, JiraSite
from integrations.myjira.page import issues_cache_forget
from integrations.signals import jira_event_received


@receiver(jira_event_received, dispatch_uid="myjira-issues-cache-forget")
def forget_cached_issues(sender: Any, *, connection: JiraConnection, site: JiraSite, **kwargs: Any) -> None:
    # The next load marks the issue changed: it must show the issue as it is now, not the
    # copy cached before the change (up to MY_JIRA_CACHE_SECONDS old).
    issues_cache_forget(user_id=connection.user_id, site_id=site.pk)
