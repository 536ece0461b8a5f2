"""Settings for jiraconnect, read from the environment (twelve-factor).

Every variable is documented in `.env.example`. A missing or malformed required
setting stops start-up with ImproperlyConfigured naming the variable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured

from jiraconnect.hosts import is_loopback

django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
_N = TypeVar("_N", int, float)

env = environ.Env()
# An optional .env file for local work; real environment variables win over it.
# JIRACONNECT_ENV_FILE (a real environment variable, never read from a file) names
# another file, or is set empty to read none: tests and containers that must see
# exactly the environment they were given, whatever lies in the project folder.
_env_file = os.environ.get("JIRACONNECT_ENV_FILE")
if _env_file is None:
    if (BASE_DIR / ".env").is_file():
        env.read_env(str(BASE_DIR / ".env"), overwrite=False)
elif _env_file.strip():
    if not Path(_env_file).is_file():
        raise ImproperlyConfigured(f"JIRACONNECT_ENV_FILE names no readable file: {_env_file!r}.")
    env.read_env(_env_file, overwrite=False)


def _required(name: str, value: str) -> str:
    if not value.strip():
        raise ImproperlyConfigured(f"{name} must be set when DEBUG is off.")
    return value


def _bool(name: str, default: bool) -> bool:
    raw = env.str(name, default="")
    if raw == "":
        return default
    truthy = {"1", "true", "yes", "on"}
    falsy = {"0", "false", "no", "off"}
    if raw.strip().lower() not in truthy | falsy:
        raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}.")
    return raw.strip().lower() in truthy


def _number(name: str, default: _N, parse: Callable[[str], _N], ok: Callable[[_N], bool], expected: str) -> _N:
    raw = env.str(name, default="").strip()
    if raw == "":
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be {expected}, not {raw!r}.") from None
    if not ok(value):
        raise ImproperlyConfigured(f"{name} must be {expected}, not {raw!r}.")
    return value


def _int(name: str, default: int) -> int:
    return _number(name, default, int, lambda n: n >= 0, "a whole number, 0 or more")


def _seconds(name: str, default: float) -> float:
    # Zero, negative, NaN or infinite would mean "always time out" or "wait forever".
    return _number(name, default, float, lambda s: math.isfinite(s) and s > 0, "a positive number of seconds")


def endpoint_url(name: str, value: str) -> str:
    """Accept https URLs, or plain http to a loopback host (tests, local sandbox)."""
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 (a malformed port only shows when read)
        host = parts.hostname or ""
    except ValueError:
        host = ""
    # Every call appends a path to this base: credentials, a query or a fragment in it
    # would be sent along (or swallow the path), so a bare origin + path only.
    if parts.username is not None:
        # Said without echoing the value: it holds a password.
        raise ImproperlyConfigured(f"{name} must not carry credentials (user:password@).")
    bare = not parts.query and not parts.fragment
    if bare and parts.scheme == "https" and host:
        return value.rstrip("/")
    if bare and parts.scheme == "http" and is_loopback(host):
        return value.rstrip("/")
    raise ImproperlyConfigured(
        f"{name} must be an https:// URL (plain http only to 127.0.0.1, localhost or ::1), not {value!r}."
    )


def _scheme(value: str) -> str:
    """The URL's scheme, or "" (a scheme only: safe to show, unlike the rest of the URL)."""
    scheme = value.split("://", 1)[0].strip().lower() if "://" in value else ""
    return scheme if re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme) else ""


def database_url(name: str, value: str) -> dict[str, Any]:
    """A django-environ database URL of a scheme it knows, naming a database.

    django-environ itself accepts nearly anything: `notaurl` becomes an empty config
    (Django then fails at the first query) and `foo://x/y` the engine "foo".
    """
    scheme = _scheme(value)
    config: dict[str, Any] = {}
    if scheme in environ.Env.DB_SCHEMES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                config = environ.Env.db_url_config(value)
        except ValueError:  # a port that is not a number
            config = {}
    # sqlite://name (two slashes) would silently be an in-memory database.
    sqlite_with_host = scheme == "sqlite" and bool(urlsplit(value).netloc) and value != "sqlite://:memory:"
    if not config.get("ENGINE") or not config.get("NAME") or sqlite_with_host:
        # The value is never echoed: it may hold a password.
        raise ImproperlyConfigured(
            f"{name} is not a database URL (scheme {scheme!r}); for example "
            "postgres://user:password@host:5432/jiraconnect or sqlite:////absolute/path/db.sqlite3."
        )
    return config


def email_url(name: str, value: str) -> dict[str, Any]:
    """A django-environ email URL of a scheme it knows; SMTP needs a host."""
    scheme = _scheme(value)
    config: dict[str, Any] = {}
    if scheme in environ.Env.EMAIL_SCHEMES:
        try:
            config = environ.Env.email_url_config(value)
        except (ValueError, ImproperlyConfigured):
            config = {}
    if not config or (scheme.startswith("smtp") and not config.get("EMAIL_HOST")):
        raise ImproperlyConfigured(
            f"{name} is not an email URL (scheme {scheme!r}); for example "
            "smtp+tls://user:password@smtp.example.com:587 or consolemail://."
        )
    return config


def log_level(name: str, value: str) -> str:
    level = value.strip().upper() or "INFO"
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ImproperlyConfigured(f"{name} must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {value!r}.")
    return level


def fernet_keys(name: str, value: str) -> list[str]:
    keys = [k.strip() for k in value.split(",") if k.strip()]
    if not keys:
        raise ImproperlyConfigured(f"{name} holds no key.")
    for position, key in enumerate(keys, start=1):
        try:
            raw = base64.urlsafe_b64decode(key.encode())
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ImproperlyConfigured(
                f"{name}: key #{position} is not a Fernet key (32 url-safe base64 bytes). "
                "Make one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'"
            )
    return keys


DEBUG = _bool("DEBUG", default=False)

_DEV_SECRET_KEY = "django-insecure-local-development-key-never-use-in-production"  # noqa: S105
SECRET_KEY = env.str("SECRET_KEY", default="")
if DEBUG and not SECRET_KEY:
    SECRET_KEY = _DEV_SECRET_KEY
_required("SECRET_KEY", SECRET_KEY)
if not DEBUG and (SECRET_KEY == _DEV_SECRET_KEY or len(SECRET_KEY) < 50):
    raise ImproperlyConfigured("SECRET_KEY must be at least 50 random characters when DEBUG is off.")

ALLOWED_HOSTS = [
    host.strip()
    for host in env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"] if DEBUG else [])
    if host.strip()
]
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DEBUG is off.")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# Tokens at rest are encrypted with FERNET_KEYS, newest first: a key list kept apart
# from SECRET_KEY and the database, so either can leak without exposing tokens, and
# keys can be rotated (rotate_token_keys) like SECRET_KEY_FALLBACKS.
_fernet_raw = env.str("FERNET_KEYS", default="")
if _fernet_raw.strip():
    FERNET_KEYS = fernet_keys("FERNET_KEYS", _fernet_raw)
elif DEBUG:
    # Local development only: a stable key so a dev database survives restarts.
    FERNET_KEYS = [base64.urlsafe_b64encode(hashlib.sha256(f"dev-fernet:{SECRET_KEY}".encode()).digest()).decode()]
else:
    raise ImproperlyConfigured("FERNET_KEYS must be set when DEBUG is off (never derived from SECRET_KEY).")
FERNET_USE_HKDF = False

INSTALLED_APPS = [
    "accounts",
    "integrations",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "jiraconnect.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "jiraconnect.wsgi.application"

DATABASES = {
    "default": database_url("DATABASE_URL", env.str("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"))
}
DATABASES["default"]["CONN_MAX_AGE"] = _int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + a busy timeout let several refresh_tokens processes share one SQLite file.
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].update(
        {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}
    )
    DATABASES["default"]["CONN_MAX_AGE"] = 0

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = ["accounts.backends.EmailBackend"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "settings"
LOGOUT_REDIRECT_URL = "login"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
# WhiteNoise's own default, fixed at start-up: pytest-django turns DEBUG off per test,
# and WhiteNoise would then warn on every request that staticfiles/ was never collected.
WHITENOISE_AUTOREFRESH = DEBUG

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

vars().update(email_url("EMAIL_URL", env.str("EMAIL_URL", default="consolemail://")))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="jiraconnect <noreply@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# Absolute links in emails (password reset uses the request; background jobs cannot).
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")
# The audit trail keeps what changed a connection's state and what staff did, this long.
EVENT_RETENTION_DAYS = _int("EVENT_RETENTION_DAYS", default=365)

# --- Security -----------------------------------------------------------------------
# Lax, not Strict: Strict drops the session on the top-level return from Atlassian,
# and the OAuth state check would then always fail.
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if not DEBUG:
    SECURE_SSL_REDIRECT = _bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = _int("SECURE_HSTS_SECONDS", default=31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = _bool("SECURE_HSTS_PRELOAD", default=False)
    if not SECURE_HSTS_PRELOAD:
        # Preloading is the operator's explicit choice, not a default: the list takes
        # only registrable domains (the portal usually lives on a subdomain), binds every
        # subdomain, and leaving it takes months. With it off, W021 is not actionable.
        SILENCED_SYSTEM_CHECKS = ["security.W021"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # Behind a TLS-terminating proxy that sets X-Forwarded-Proto, set
    # SECURE_PROXY_SSL_HEADER=true; never when clients can reach gunicorn directly.
    if _bool("SECURE_PROXY_SSL_HEADER", default=False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Atlassian OAuth 2.0 (3LO) ------------------------------------------------------
# Unset ATLASSIAN_CLIENT_ID = Jira is not configured: the settings page says so and
# the connect view refuses; nothing else breaks.
ATLASSIAN_CLIENT_ID = env.str("ATLASSIAN_CLIENT_ID", default="")
ATLASSIAN_CLIENT_SECRET = env.str("ATLASSIAN_CLIENT_SECRET", default="")
ATLASSIAN_REDIRECT_URI = env.str("ATLASSIAN_REDIRECT_URI", default="")
if ATLASSIAN_CLIENT_ID:
    if not ATLASSIAN_CLIENT_SECRET:
        raise ImproperlyConfigured("ATLASSIAN_CLIENT_SECRET must be set when ATLASSIAN_CLIENT_ID is.")
    if not ATLASSIAN_REDIRECT_URI:
        raise ImproperlyConfigured("ATLASSIAN_REDIRECT_URI must be set when ATLASSIAN_CLIENT_ID is.")
    _redirect = urlsplit(ATLASSIAN_REDIRECT_URI)
    if _redirect.scheme not in ("http", "https") or not _redirect.hostname:
        raise ImproperlyConfigured(f"ATLASSIAN_REDIRECT_URI is not an absolute URL: {ATLASSIAN_REDIRECT_URI!r}.")
    if not DEBUG and _redirect.scheme != "https":
        raise ImproperlyConfigured("ATLASSIAN_REDIRECT_URI must be https when DEBUG is off.")
# Jira webhooks (lifecycle.webhooks): on by default; they need the manage:jira-webhook
# scope, which the default scopes then include. Connections granted before it keep
# working and are asked to reconnect for live updates.
ATLASSIAN_WEBHOOKS = _bool("ATLASSIAN_WEBHOOKS", default=True)
_DEFAULT_SCOPES = "read:jira-work read:jira-user read:me offline_access" + (
    " manage:jira-webhook" if ATLASSIAN_WEBHOOKS else ""
)
ATLASSIAN_SCOPES = env.str("ATLASSIAN_SCOPES", default=_DEFAULT_SCOPES).split()
# Where Jira delivers webhooks: empty = SITE_URL + the receiver's path. Never taken
# from a request's Host header; https only, except plain http to a loopback host.
_webhook_url = env.str("ATLASSIAN_WEBHOOK_URL", default="").strip()
if _webhook_url:
    # The same rule as the endpoints (checked there), but the path is kept as written:
    # the receiver's path ends in a slash.
    endpoint_url("ATLASSIAN_WEBHOOK_URL", _webhook_url)
ATLASSIAN_WEBHOOK_URL = _webhook_url
# Received Jira events (the My Jira activity panel) are kept this long.
WEBHOOK_EVENT_RETENTION_DAYS = _int("WEBHOOK_EVENT_RETENTION_DAYS", default=30)
ATLASSIAN_AUTH_URL = endpoint_url(
    "ATLASSIAN_AUTH_URL", env.str("ATLASSIAN_AUTH_URL", default="https://auth.atlassian.com")
)
ATLASSIAN_API_URL = endpoint_url("ATLASSIAN_API_URL", env.str("ATLASSIAN_API_URL", default="https://api.atlassian.com"))
# Seconds: (connect, read). requests has no default timeout; every call uses this.
ATLASSIAN_TIMEOUT = (
    _seconds("ATLASSIAN_CONNECT_TIMEOUT", default=5.0),
    _seconds("ATLASSIAN_READ_TIMEOUT", default=20.0),
)

# --- Logging --------------------------------------------------------------------------
LOG_LEVEL = log_level("LOG_LEVEL", env.str("LOG_LEVEL", default="INFO"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # urllib3 logs full request lines at DEBUG; keep it quiet so a URL with a
        # code can never reach the log, whatever LOG_LEVEL is.
        "urllib3": {"level": "WARNING"},
    },
}
