"""Test settings: the real settings module, fed a fixed test environment.

Only DATABASE_URL comes from outside, so one suite runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import os

os.environ.update(
    {
        # A developer's .env must not change what the suite sees.
        "JIRACONNECT_ENV_FILE": "",
        "DEBUG": "true",
        "SECRET_KEY": "test-secret-key-" + "x" * 50,
        "FERNET_KEYS": "dGVzdC1mZXJuZXQta2V5LTAwMDAwMDAwMDAwMDAwMDA=",
        "ALLOWED_HOSTS": "testserver,localhost,127.0.0.1",
        "ATLASSIAN_CLIENT_ID": "test-client-id",
        "ATLASSIAN_CLIENT_SECRET": "test-client-secret-do-not-log-a8f3c61e9b2d4075e1c9f0a7b3d5e2c4f6",
        "ATLASSIAN_REDIRECT_URI": "https://portal.example/integrations/jira/callback/",
        "ATLASSIAN_SCOPES": "read:jira-work read:jira-user read:me offline_access",
        # Child processes of the concurrency proofs (manage.py refresh_tokens) talk to a local
        # token server; everything else, a developer's shell included, gets Atlassian's URLs.
        "ATLASSIAN_AUTH_URL": os.environ.get("TEST_ATLASSIAN_SERVER_URL") or "https://auth.atlassian.com",
        "ATLASSIAN_API_URL": os.environ.get("TEST_ATLASSIAN_SERVER_URL") or "https://api.atlassian.com",
        "EMAIL_URL": "consolemail://",
        "SITE_URL": "http://testserver",
        "LOG_LEVEL": "INFO",
    }
)
os.environ.setdefault("DATABASE_URL", "sqlite:///" + os.path.join(os.path.dirname(__file__), "..", "test-db.sqlite3"))

from jiraconnect.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not :memory:, so subprocess tests (refresh_tokens in several processes)
    # share the test database. TEST_SQLITE_PATH lets parallel runs keep apart.
    DATABASES["default"]["TEST"] = {"NAME": os.environ.get("TEST_SQLITE_PATH", str(BASE_DIR / "test-db.sqlite3"))}  # noqa: F405
else:
    DATABASES["default"]["TEST"] = {"NAME": os.environ.get("TEST_PG_NAME", "test_jiraconnect")}  # noqa: F405
