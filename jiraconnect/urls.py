from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from accounts import views as account_views
from jiraconnect import views
from monitoring import views as monitoring_views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="settings", permanent=False), name="home"),
    path("accounts/", include("accounts.urls")),
    path("settings/", account_views.settings_page, name="settings"),
    path("integrations/jira/", include("integrations.urls")),
    path("jira/", include("integrations.myjira.urls")),
    path("healthz", views.healthz, name="healthz"),
    path("healthz/refresh", monitoring_views.refresh_health, name="healthz-refresh"),
    path("metrics", monitoring_views.metrics, name="metrics"),
    path("admin/", admin.site.urls),
]
