from __future__ import annotations

from django.urls import path

from integrations.myjira import views

urlpatterns = [
    path("", views.my_jira, name="my-jira"),
]
