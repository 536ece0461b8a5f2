from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.forms import AuthenticationForm, UserChangeForm, UserCreationForm

from accounts.models import User, normalize_email


class EmailField(forms.EmailField):
    def clean(self, value: Any) -> str:
        return normalize_email(super().clean(value) or "")


class SignUpForm(UserCreationForm[User]):
    """Email + password, checked by Django's password validators."""

    DUPLICATE_EMAIL = "An account with this email address already exists."

    class Meta:
        model = User
        fields = ("email",)
        field_classes = {"email": EmailField}

    def clean_email(self) -> str:
        email: str = self.cleaned_data["email"]
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError(self.DUPLICATE_EMAIL)
        return email


class LoginForm(AuthenticationForm):
    """Django's login form, asking for an email address (matched in any case)."""

    username = forms.EmailField(
        label="Email address",
        max_length=254,
        widget=forms.EmailInput(attrs={"autofocus": True, "autocomplete": "email"}),
    )
    # Django's wording adds "both fields may be case-sensitive": not so for the email.
    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "Please enter a correct email address and password.",
    }


class AdminUserCreationForm(SignUpForm):
    pass


class AdminUserChangeForm(UserChangeForm[User]):
    class Meta:
        model = User
        fields = ("email",)
        field_classes = {"email": EmailField}
