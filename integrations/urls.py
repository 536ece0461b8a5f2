from __future__ import annotations

from django.urls import path

from integrations import views

urlpatterns = [
    path("connect/", views.connect, name="jira-connect"),
    path("callback/", views.callback, name="jira-callback"),
    path("connections/<int:connection_id>/disconnect/", views.disconnect, name="jira-disconnect"),
    path("sites/<int:site_id>/enabled/", views.site_enabled, name="jira-site-enabled"),
    path("webhook/", views.webhook, name="jira-webhook"),
]
