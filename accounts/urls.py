from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path
from django.views.decorators.cache import never_cache

from accounts import views
from accounts.forms import LoginForm
from jiraconnect import ratelimits

# Django's auth URLs, spelled out: every password page is never_cache (Django leaves it
# off reset, its done pages and change, so a shared or back-button cache could keep them),
# and the login and reset forms count against the abuse limits.
urlpatterns = [
    path("signup/", views.signup, name="signup"),
    path(
        "login/",
        ratelimits.rate_limited(*ratelimits.LOGIN)(auth_views.LoginView.as_view(authentication_form=LoginForm)),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password_change/", never_cache(auth_views.PasswordChangeView.as_view()), name="password_change"),
    path(
        "password_change/done/",
        never_cache(auth_views.PasswordChangeDoneView.as_view()),
        name="password_change_done",
    ),
    path(
        "password_reset/",
        ratelimits.rate_limited(*ratelimits.PASSWORD_RESET)(never_cache(auth_views.PasswordResetView.as_view())),
        name="password_reset",
    ),
    path(
        "password_reset/done/",
        never_cache(auth_views.PasswordResetDoneView.as_view()),
        name="password_reset_done",
    ),
    path(
        "reset/<uidb64>/<token>/",
        never_cache(auth_views.PasswordResetConfirmView.as_view()),
        name="password_reset_confirm",
    ),
    path("reset/done/", never_cache(auth_views.PasswordResetCompleteView.as_view()), name="password_reset_complete"),
]
