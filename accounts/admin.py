"""Users in the admin. Only superusers grant power or touch other staff accounts.

A staff member holding accounts.change_user (or auth.change_group) could otherwise
make themselves superuser, give their group every permission, or set another staff
member's password or email and sign in as them.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin as BaseGroupAdmin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.models import Group
from django.http import HttpRequest

from accounts.forms import AdminUserChangeForm, AdminUserCreationForm
from accounts.models import User

PRIVILEGE_FIELDS = ("is_staff", "is_superuser", "groups", "user_permissions")


def _is_superuser(request: HttpRequest) -> bool:
    return bool(request.user.is_active and request.user.is_superuser)


def _protected(request: HttpRequest, obj: User | None) -> bool:
    """Another staff account, seen by someone who is not a superuser."""
    return (
        obj is not None
        and (obj.is_staff or obj.is_superuser)
        and obj.pk != request.user.pk
        and not _is_superuser(request)
    )


@admin.register(User)
class UserAdmin(BaseUserAdmin[User]):
    form = AdminUserChangeForm
    add_form = AdminUserCreationForm
    ordering = ("email",)
    list_display = ("email", "is_staff", "is_active", "date_joined", "last_login")
    list_filter = ("is_staff", "is_superuser", "is_active")
    search_fields = ("email",)
    readonly_fields = ("date_joined", "last_login")
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Permissions", {"fields": ("is_active", *PRIVILEGE_FIELDS)}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)

    def get_readonly_fields(self, request: HttpRequest, obj: User | None = None) -> Any:
        fields = tuple(super().get_readonly_fields(request, obj))
        if _is_superuser(request):
            return fields
        # Read-only fields are never taken from the POST: is_superuser=on is ignored.
        return (*fields, *PRIVILEGE_FIELDS)

    def has_change_permission(self, request: HttpRequest, obj: User | None = None) -> bool:
        # Other staff accounts stay view-only: no email, activity or password change
        # (Django's password view asks this too).
        return not _protected(request, obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: User | None = None) -> bool:
        return not _protected(request, obj) and super().has_delete_permission(request, obj)


admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(BaseGroupAdmin):
    """Groups carry permissions: only superusers create or change them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return _is_superuser(request)

    def has_change_permission(self, request: HttpRequest, obj: Group | None = None) -> bool:
        return _is_superuser(request)

    def has_delete_permission(self, request: HttpRequest, obj: Group | None = None) -> bool:
        return _is_superuser(request)
