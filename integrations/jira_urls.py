from __future__ import annotations

from django.urls import path

from integrations import my_jira

urlpatterns = [
    path("", my_jira.my_jira, name="my-jira"),
]
