"""The "My Jira" page: open issues assigned to the user, per enabled site."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from accounts.models import User
from integrations.myjira import page


def _site_id(raw: str) -> int:
    # ASCII digits only: int() would also take "٣" or " 3".
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise Http404("No such site")
    return int(raw)


@require_GET
@login_required
@never_cache
def my_jira(request: HttpRequest) -> HttpResponse:
    assert isinstance(request.user, User)
    raw_site = request.GET.get("site")
    site_id = None if raw_site is None else _site_id(raw_site)
    page_token = request.GET.get("page") if site_id is not None else None
    if page_token is not None and not page.page_token_valid(page_token):
        return HttpResponseBadRequest("Invalid page token.", content_type="text/plain")
    try:
        content = page.my_jira_page(user=request.user, site_id=site_id, page_token=page_token)
    except page.SiteNotFound:
        raise Http404("No such site") from None
    return render(request, "integrations/my_jira.html", {"page": content})
