"""The admin site: staff pass a second factor (TOTP or a recovery code) after the password.

Enrollment and verification are pages of the site itself, reachable by a staff member
who has signed in with a password but not yet with the second factor; every other admin
page needs both (unless ADMIN_REQUIRE_2FA is off, which settings allow only with DEBUG).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path, reverse
from django.utils.http import urlencode
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters

from accounts import two_factor
from accounts.models import User
from accounts.views import safe_next

THROTTLED = "Too many wrong codes in a row: wait a minute, then try the current code again."


class CodeForm(forms.Form):
    code = forms.CharField(
        label="Code",
        max_length=64,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "autofocus": True, "inputmode": "text"}),
    )


class PortalAdminSite(admin.AdminSite):
    site_header = "jiraconnect support"
    site_title = "jiraconnect support"

    def has_permission(self, request: HttpRequest) -> bool:
        return super().has_permission(request) and (
            not settings.ADMIN_REQUIRE_2FA or two_factor.is_verified(request=request)
        )

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        # Signed in with a password, not yet with the second factor: on to that step.
        pending = self._pending_staff(request)
        if request.method == "GET" and pending is not None and not self.has_permission(request):
            return self._second_factor_step(request, pending)
        return super().login(request, extra_context)

    def get_urls(self) -> list[URLResolver | URLPattern]:
        return [
            path("otp/", self._otp_view(self.otp_verify), name="otp_verify"),
            path("otp/enroll/", self._otp_view(self.otp_enroll), name="otp_enroll"),
            *super().get_urls(),
        ]

    def _otp_view(self, view: Any) -> Any:
        return never_cache(csrf_protect(sensitive_post_parameters("code")(view)))

    def _pending_staff(self, request: HttpRequest) -> User | None:
        user = request.user
        if isinstance(user, User) and user.is_active and user.is_staff:
            return user
        return None

    def _next(self, request: HttpRequest) -> str:
        return safe_next(request, reverse("admin:index", current_app=self.name))

    def _second_factor_step(self, request: HttpRequest, user: User) -> HttpResponse:
        name = "admin:otp_verify" if two_factor.is_enrolled(user=user) else "admin:otp_enroll"
        query = urlencode({REDIRECT_FIELD_NAME: self._next(request)})
        return HttpResponseRedirect(f"{reverse(name, current_app=self.name)}?{query}")

    def _render(self, request: HttpRequest, template: str, title: str, **context: Any) -> HttpResponse:
        request.current_app = self.name
        context = {
            **self.each_context(request),
            "title": title,
            "subtitle": None,
            "next": self._next(request),
            **context,
        }
        return TemplateResponse(request, template, context)

    def otp_verify(self, request: HttpRequest) -> HttpResponse:
        user = self._pending_staff(request)
        if user is None:
            return HttpResponseRedirect(reverse("admin:login", current_app=self.name))
        if not two_factor.is_enrolled(user=user):
            return self._second_factor_step(request, user)
        form = CodeForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                if two_factor.verify(request=request, user=user, code=form.cleaned_data["code"]):
                    return HttpResponseRedirect(self._next(request))
                form.add_error(
                    "code", "That code is not right. Enter the current code from your app, or a recovery code."
                )
            except two_factor.Throttled:
                form.add_error("code", THROTTLED)
        return self._render(request, "admin/otp_verify.html", "Second factor", form=form)

    def otp_enroll(self, request: HttpRequest) -> HttpResponse:
        user = self._pending_staff(request)
        if user is None:
            return HttpResponseRedirect(reverse("admin:login", current_app=self.name))
        if two_factor.is_enrolled(user=user):
            # A second app only through a superuser: whoever holds the password alone must
            # not be able to add a device to an account that already has one.
            return self._second_factor_step(request, user)
        form = CodeForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                codes = two_factor.enrollment_confirm(request=request, user=user, code=form.cleaned_data["code"])
            except two_factor.Throttled:
                form.add_error("code", THROTTLED)
            else:
                if codes is not None:
                    return self._render(
                        request, "admin/otp_recovery_codes.html", "Your recovery codes", recovery_codes=codes
                    )
                form.add_error("code", "That code is not right. Enter the code your app shows now.")
        enrollment = two_factor.enrollment_start(user=user)
        return self._render(
            request, "admin/otp_enroll.html", "Set up a second factor", form=form, enrollment=enrollment
        )
