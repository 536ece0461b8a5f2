"""The "Connection health" page in the support admin.

Registered as the admin of a proxy model so it sits on the admin index beside the
connections, with the admin's login, staff check and layout; its one URL is the page.
Who may see the connections may see their health: view permission on JiraConnection.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from integrations import clock
from monitoring.charts import stacked_bars
from monitoring.health import PERIODS, health_page
from monitoring.models import ConnectionHealth

VIEW_CONNECTIONS = "integrations.view_jiraconnection"


@admin.register(ConnectionHealth)
class ConnectionHealthAdmin(admin.ModelAdmin[ConnectionHealth]):
    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(VIEW_CONNECTIONS)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(VIEW_CONNECTIONS)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        # The page is the "changelist": the admin index links to it by that name.
        info = self.opts.app_label, self.opts.model_name
        return [path("", self.admin_site.admin_view(self.health_view), name="{}_{}_changelist".format(*info))]

    def health_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        raw = request.GET.get("days", str(PERIODS[0]))
        if raw not in {str(days) for days in PERIODS}:
            return HttpResponseBadRequest(
                f"days must be {' or '.join(str(d) for d in PERIODS)}.", content_type="text/plain"
            )
        page = health_page(now=clock.now(), days=int(raw))
        context = {
            **self.admin_site.each_context(request),
            "title": "Connection health",
            "subtitle": None,
            "opts": self.opts,
            "page": page,
            "periods": PERIODS,
            "successes_chart": stacked_bars(page.successes, chart_id="successes"),
            "failures_chart": stacked_bars(page.failures, chart_id="failures"),
        }
        return TemplateResponse(request, "admin/monitoring/health.html", context)
