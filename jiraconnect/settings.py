"""Settings for jiraconnect, read from the environment (twelve-factor).

Every variable is documented in `.env.example`. A missing or malformed required
setting stops start-up with ImproperlyConfigured naming the variable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import math
import os
import re
import warnings
from collections.abc import Callable
from datetime import timedelta
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


def database_pool(*, max_size: int, min_size: int, timeout: float) -> dict[str, Any] | None:
    """psycopg_pool's options for Django's PostgreSQL `pool` option; None (no pool) when
    max_size is 0."""
    if max_size == 0:
        return None
    if min_size > max_size:
        raise ImproperlyConfigured(
            f"DATABASE_POOL_MIN_SIZE ({min_size}) must not exceed DATABASE_POOL_MAX_SIZE ({max_size})."
        )
    return {"min_size": min_size, "max_size": max_size, "timeout": timeout}


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


def rate(name: str, default: str) -> str | None:
    """A django-ratelimit rate such as 10/h or 30/5m (count / [n]s|m|h|d); "off" = no limit."""
    raw: str = env.str(name, default=default).strip().lower()
    if raw == "off":
        return None
    match = re.fullmatch(r"([0-9]+)/([0-9]*)([smhd])", raw)
    if not match or int(match[1]) < 1 or (match[2] and int(match[2]) < 1):
        raise ImproperlyConfigured(
            f"{name} must be a rate like 10/h or 30/5m (requests / period in s, m, h or d), or off; not {raw!r}."
        )
    return raw


def redis_url(name: str, value: str) -> str:
    if _scheme(value) not in ("redis", "rediss", "unix") or not urlsplit(value).netloc + urlsplit(value).path:
        # Never echoed: it may hold a password.
        raise ImproperlyConfigured(
            f"{name} is not a Redis URL (scheme {_scheme(value)!r}); for example redis://127.0.0.1:6379/0."
        )
    return value


def log_level(name: str, value: str) -> str:
    level = value.strip().upper() or "INFO"
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ImproperlyConfigured(f"{name} must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {value!r}.")
    return level


def duration(name: str, value: str) -> timedelta | None:
    """ "30m", "2h", "900s" or "1d"; empty means off."""
    raw = value.strip().lower()
    if not raw:
        return None
    match = re.fullmatch(r"(\d{1,9})\s*([smhd])", raw)
    if match is None or int(match[1]) == 0:
        raise ImproperlyConfigured(f"{name} must be a duration such as 30m, 2h or 900s, not {value!r}.")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match[2]]
    return timedelta(**{unit: int(match[1])})


def ip_networks(name: str, value: str) -> list[str]:
    """Comma-separated addresses or CIDR networks, normalised (10.0.0.7 -> 10.0.0.7/32)."""
    networks = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {item!r} is not an IP address or network (CIDR).") from None
    return networks


def one_of(name: str, value: str, choices: tuple[str, ...]) -> str:
    chosen = value.strip().lower() or choices[0]
    if chosen not in choices:
        raise ImproperlyConfigured(f"{name} must be {' or '.join(choices)}, not {value!r}.")
    return chosen


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

ALLOWED_HOSTS = [
    host.strip()
    for host in env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"] if DEBUG else [])
    if host.strip()
]
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DEBUG is off.")

_DEV_SECRET_KEY = "django-insecure-local-development-key-never-use-in-production"  # noqa: S105
SECRET_KEY = env.str("SECRET_KEY", default="")
if DEBUG and not SECRET_KEY:
    # The committed key signs sessions and reset links: only tolerable while nobody but
    # this machine can reach the portal (DEBUG=1 exposed on a network host would not be).
    if not all(is_loopback(host.strip("[]")) for host in ALLOWED_HOSTS):
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is on and ALLOWED_HOSTS names a host other than "
            "127.0.0.1, localhost or ::1."
        )
    SECRET_KEY = _DEV_SECRET_KEY
_required("SECRET_KEY", SECRET_KEY)
if not DEBUG and (SECRET_KEY == _DEV_SECRET_KEY or len(SECRET_KEY) < 50):
    raise ImproperlyConfigured("SECRET_KEY must be at least 50 random characters when DEBUG is off.")
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
    "monitoring",
    # Django's admin with our own default site: it asks staff for a second factor.
    "accounts.admin_config.PortalAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    # Login brute-force protection: failed attempts live in the database, so a lockout
    # holds across gunicorn workers and hosts (not per-process memory).
    "axes",
    # The admin's second factor: TOTP apps, plus single-use recovery codes.
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    # Content-Security-Policy header.
    "csp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Permissions-Policy: the portal needs no camera, microphone, location...
    "django_permissions_policy.PermissionsPolicyMiddleware",
    # CSP with the Atlassian origins the current settings name (jiraconnect/security.py).
    "jiraconnect.security.PortalCSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # request.user.is_verified(): whether this session passed the second factor.
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # After messages: it tells a user whose session ended why.
    "accounts.middleware.SessionLifetimeMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as axes asks: turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
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
# Read whatever the engine, so a malformed value fails before the move to PostgreSQL.
_pool = database_pool(
    max_size=_int("DATABASE_POOL_MAX_SIZE", default=4),
    min_size=_int("DATABASE_POOL_MIN_SIZE", default=1),
    timeout=_seconds("DATABASE_POOL_TIMEOUT", default=30.0),
)
DATABASES["default"].setdefault("OPTIONS", {})
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and _pool is not None:
    # Each process (a gunicorn worker, a refresh_tokens run) opens at most max_size
    # connections whatever its thread count; a thread returns its connection to the pool
    # whenever Django closes it (the end of a request; the refresh path before and after
    # each call to Atlassian). The pool keeps them open, which is what CONN_MAX_AGE does
    # without one (Django refuses both at once).
    DATABASES["default"]["OPTIONS"]["pool"] = _pool
    DATABASES["default"]["CONN_MAX_AGE"] = 0
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + a busy timeout let several refresh_tokens processes share one SQLite file.
    DATABASES["default"]["OPTIONS"].update(
        {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}
    )
    DATABASES["default"]["CONN_MAX_AGE"] = 0

AUTH_USER_MODEL = "accounts.User"
# Axes first: it refuses a locked-out (account, address) pair before any password is checked.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "accounts.backends.EmailBackend"]
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
# My Jira: sites fetched per page view (the rest are one click away), and how long a
# site's issues are reused on reloads (per user; 0 turns the cache off).
MY_JIRA_MAX_SITES = _int("MY_JIRA_MAX_SITES", default=10)
MY_JIRA_CACHE_SECONDS = _int("MY_JIRA_CACHE_SECONDS", default=30)
# The audit trail keeps what changed a connection's state and what staff did, this long.
EVENT_RETENTION_DAYS = _int("EVENT_RETENTION_DAYS", default=365)

# --- Cache: shared by every worker and host (abuse-limit counters live here) -------------
# Without REDIS_URL the database is the cache: shared, but each counter costs queries and
# its increments are not atomic (see README, Security). `manage.py createcachetable` makes
# the table; the test runner makes it in test databases.
REDIS_URL = env.str("REDIS_URL", default="").strip()
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url("REDIS_URL", REDIS_URL),
            "KEY_PREFIX": "jiraconnect",
            # A Redis that does not answer must not hang a worker.
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "jiraconnect_cache",
            # Django's default (300) culls a third of the table when exceeded: a flood of
            # fresh keys would then evict the counters that hold an attacker back.
            "OPTIONS": {"MAX_ENTRIES": 50_000},
        }
    }

# --- Abuse limits (django-ratelimit, POSTs only; a limited request gets templates/429.html) ---
# Client address for the per-IP limits: REMOTE_ADDR, unless TRUSTED_PROXY_COUNT names how
# many proxies of ours append to X-Forwarded-For (jiraconnect/ratelimits.py).
TRUSTED_PROXY_COUNT = _int("TRUSTED_PROXY_COUNT", default=0)
RATELIMIT_IP_META_KEY = "jiraconnect.ratelimits.client_ip"
# A cache that fails lets requests through (logged): Redis down must not lock everyone out.
RATELIMIT_FAIL_OPEN = True
RATE_LIMIT_SIGNUP_PER_IP = rate("RATE_LIMIT_SIGNUP_PER_IP", "10/h")
RATE_LIMIT_LOGIN_PER_IP = rate("RATE_LIMIT_LOGIN_PER_IP", "30/5m")
RATE_LIMIT_LOGIN_PER_ADDRESS = rate("RATE_LIMIT_LOGIN_PER_ADDRESS", "10/15m")
RATE_LIMIT_PASSWORD_RESET_PER_IP = rate("RATE_LIMIT_PASSWORD_RESET_PER_IP", "10/h")
RATE_LIMIT_PASSWORD_RESET_PER_ADDRESS = rate("RATE_LIMIT_PASSWORD_RESET_PER_ADDRESS", "3/h")
RATE_LIMIT_JIRA_CONNECT_PER_USER = rate("RATE_LIMIT_JIRA_CONNECT_PER_USER", "10/10m")

# --- Monitoring -------------------------------------------------------------------------
# Daily counters (refresh outcomes, token-endpoint latency) are kept this long; the
# health page charts the last 90 days.
MONITORING_RETENTION_DAYS = _int("MONITORING_RETENTION_DAYS", default=400)
# A process writes its buffered counts at most this often (and at the end of a run).
MONITORING_FLUSH_SECONDS = _int("MONITORING_FLUSH_SECONDS", default=60)
# /metrics answers only when one of these is set (both: both must match); 404 otherwise.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
if METRICS_TOKEN and len(METRICS_TOKEN) < 32:
    raise ImproperlyConfigured("METRICS_TOKEN must be at least 32 random characters.")
METRICS_ALLOWED_IPS = ip_networks("METRICS_ALLOWED_IPS", env.str("METRICS_ALLOWED_IPS", default=""))
# /healthz/refresh answers 503 once the scheduled run has not finished for this long.
REFRESH_STALE_AFTER = duration("REFRESH_STALE_AFTER", env.str("REFRESH_STALE_AFTER", default=""))
# prometheus_client reads it from the environment itself; a wrong one fails at start-up
# here, not at the first metric a worker writes.
_multiproc_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
if _multiproc_dir and not Path(_multiproc_dir).is_dir():
    raise ImproperlyConfigured(f"PROMETHEUS_MULTIPROC_DIR names no directory: {_multiproc_dir!r}.")

# --- Security -----------------------------------------------------------------------
# Sessions end after SESSION_IDLE_TIMEOUT seconds without a request and SESSION_COOKIE_AGE
# seconds after sign-in, whichever comes first (accounts/middleware.py).
SESSION_COOKIE_AGE = _int("SESSION_COOKIE_AGE", default=12 * 60 * 60)
SESSION_IDLE_TIMEOUT = _int("SESSION_IDLE_TIMEOUT", default=30 * 60)
if not 60 <= SESSION_IDLE_TIMEOUT <= SESSION_COOKIE_AGE:
    raise ImproperlyConfigured(
        "SESSION_IDLE_TIMEOUT must be at least 60 seconds and at most SESSION_COOKIE_AGE "
        f"({SESSION_COOKIE_AGE}), not {SESSION_IDLE_TIMEOUT}."
    )
PASSWORD_RESET_TIMEOUT = 60 * 60
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
    # The __Host- prefix makes browsers refuse these cookies unless Secure, Path=/ and
    # without Domain: a sibling subdomain cannot plant or overwrite them.
    SESSION_COOKIE_NAME = "__Host-sessionid"
    CSRF_COOKIE_NAME = "__Host-csrftoken"
    # Behind a TLS-terminating proxy that sets X-Forwarded-Proto, set
    # SECURE_PROXY_SSL_HEADER=true; never when clients can reach gunicorn directly.
    if _bool("SECURE_PROXY_SSL_HEADER", default=False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Login brute-force protection (django-axes) --------------------------------------
# Per account AND address: an attacker spraying one address is stopped, yet cannot lock
# the real user out from elsewhere. The database handler shares the count between every
# worker and host. Behind a proxy REMOTE_ADDR is the proxy, and the lock is then per account.
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# Ten tries per 15 minutes per (account, address) leaves a real user room for typos and
# an attacker about a thousand guesses a day per address, against passwords that pass
# Django's validators. A locked pair waits out the cool-off; each try while locked
# restarts it (axes' default), and the lockout page says until when.
AXES_FAILURE_LIMIT = 10
AXES_COOLOFF_TIME = timedelta(minutes=15)
# Both login forms post the email address as "username" (User.USERNAME_FIELD is "email").
AXES_USERNAME_FORM_FIELD = "username"
# One count per address whatever its case, as login itself ignores case.
AXES_USERNAME_CALLABLE = "accounts.lockout.attempted_username"
AXES_LOCKOUT_CALLABLE = "accounts.lockout.lockout_response"
AXES_RESET_ON_SUCCESS = True
# Addresses and user names are personal data: kept out of axes' log lines.
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "password"]
# No start-up banner in every manage.py command's output.
AXES_VERBOSE = False

# --- Admin second factor (django-otp) -------------------------------------------------
# Every staff session must pass a TOTP code (or a recovery code) before any admin page.
# Waiving it is for local development only.
ADMIN_REQUIRE_2FA = _bool("ADMIN_REQUIRE_2FA", default=True)
if not ADMIN_REQUIRE_2FA and not DEBUG:
    raise ImproperlyConfigured("ADMIN_REQUIRE_2FA may be false only when DEBUG is on.")
OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", default="jiraconnect")
# Keys and recovery codes never show in the device admin pages.
OTP_ADMIN_HIDE_SENSITIVE_DATA = True

# --- Content-Security-Policy and Permissions-Policy ------------------------------------
# Everything from our own origin; no inline script anywhere. Images also over https
# (Atlassian avatars live on several CDNs). PortalCSPMiddleware adds the Atlassian
# authorization origin to form-action (Connect posts, then redirects there) and, for the
# local sandbox only, its http origin to img-src.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "https:", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}
PERMISSIONS_POLICY: dict[str, list[str]] = {
    feature: []
    for feature in (
        "accelerometer",
        "autoplay",
        "camera",
        "display-capture",
        "encrypted-media",
        "fullscreen",
        "geolocation",
        "gyroscope",
        "magnetometer",
        "microphone",
        "midi",
        "payment",
        "publickey-credentials-get",
        "screen-wake-lock",
        "serial",
        "usb",
        "xr-spatial-tracking",
    )
}

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
# json: one JSON object per line (python-json-logger), extra fields included.
LOG_FORMAT = one_of("LOG_FORMAT", env.str("LOG_FORMAT", default="plain"), ("plain", "json"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "monitoring.logs.json_formatter"},
    },
    # Every line logged during a refresh carries its connection id, source and duration.
    "filters": {"refresh": {"()": "monitoring.logs.RefreshContextFilter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["refresh"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # urllib3 logs full request lines at DEBUG; keep it quiet so a URL with a
        # code can never reach the log, whatever LOG_LEVEL is.
        "urllib3": {"level": "WARNING"},
    },
}
