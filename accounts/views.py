from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters

from accounts.forms import SignUpForm
from accounts.models import User
from integrations import selectors as integration_selectors
from jiraconnect import ratelimits


def safe_next(request: HttpRequest, default: str) -> str:
    """The `next` parameter when it points inside this site, else `default`."""
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return default


@sensitive_post_parameters("password1", "password2")
@csrf_protect
@ratelimits.rate_limited(*ratelimits.SIGNUP)
@never_cache
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect(safe_next(request, settings.LOGIN_REDIRECT_URL))
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            with transaction.atomic():
                user = form.save()
        except IntegrityError:
            # The same address (in any case) was registered since the form checked it.
            form.add_error("email", SignUpForm.DUPLICATE_EMAIL)
        else:
            login(request, user, backend="accounts.backends.EmailBackend")
            messages.success(request, "Welcome! Your account is ready.")
            return redirect(safe_next(request, settings.LOGIN_REDIRECT_URL))
    return render(request, "registration/signup.html", {"form": form, "next": safe_next(request, "")})


@login_required
@never_cache
def settings_page(request: HttpRequest) -> HttpResponse:
    assert isinstance(request.user, User)
    context = integration_selectors.settings_context(user=request.user)
    return render(request, "accounts/settings.html", context)
