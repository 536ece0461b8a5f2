from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.forms import UserChangeForm, UserCreationForm

from accounts.models import User, normalize_email


class EmailField(forms.EmailField):
    def clean(self, value: Any) -> str:
        return normalize_email(super().clean(value) or "")


class SignUpForm(UserCreationForm[User]):
    """Email + password, checked by Django's password validators."""

    class Meta:
        model = User
        fields = ("email",)
        field_classes = {"email": EmailField}

    def clean_email(self) -> str:
        email: str = self.cleaned_data["email"]
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("An account with this email address already exists.")
        return email


class AdminUserCreationForm(SignUpForm):
    pass


class AdminUserChangeForm(UserChangeForm[User]):
    class Meta:
        model = User
        fields = ("email",)
        field_classes = {"email": EmailField}
