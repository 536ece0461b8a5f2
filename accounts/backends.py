from __future__ import annotations

from django.contrib.auth.backends import ModelBackend


class EmailBackend(ModelBackend):
    """ModelBackend whose lookup (UserManager.get_by_natural_key) ignores email case."""
