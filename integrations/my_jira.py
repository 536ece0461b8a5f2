"""The "My Jira" page: open issues assigned to the user, per enabled site."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.models import User
from integrations import selectors


@login_required
def my_jira(request: HttpRequest) -> HttpResponse:
    assert isinstance(request.user, User)
    return render(request, "integrations/my_jira.html", selectors.settings_context(user=request.user))
