"""Django's admin app, whose default site (the one @admin.register fills) asks for 2FA.

A module of its own: INSTALLED_APPS imports it before any model is ready.
"""

from __future__ import annotations

from django.contrib.admin.apps import AdminConfig


class PortalAdminConfig(AdminConfig):
    default_site = "accounts.admin_site.PortalAdminSite"
