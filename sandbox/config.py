"""Settings of one sandbox instance; most can be changed at run time via /_sandbox/config."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

DAY = 86_400.0
# The sandbox's own fixed, public test credentials: `make run`, the benchmarks and the
# tests that use the sandbox as it comes all import these. The secret is 64 hex characters,
# as long as Atlassian's: deliveries are signed with it (HS256), and PyJWT warns about an
# HMAC key under 32 bytes (InsecureKeyLengthWarning).
CLIENT_ID = "sandbox-client-id"
CLIENT_SECRET = "ac87cff78736baebb5dffe2b172a6b78c0c9843d78e3d97280673a5d531b6a70"


@dataclass
class SandboxConfig:
    host: str = "127.0.0.1"
    port: int = 8001
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    redirect_uri: str = "http://127.0.0.1:8000/integrations/jira/callback/"
    # Atlassian accepts a rotated refresh token again for 10 minutes [staff].
    leeway: float = 600.0
    access_ttl: int = 3600
    app_name: str = "jiraconnect (sandbox)"
    # Dead grants answer 403 unauthorized_client instead of invalid_grant (both seen in the wild).
    unauthorized_client_style: bool = False
    code_ttl: float = 600.0
    refresh_idle_ttl: float = 90 * DAY
    grant_max_age: float = 365 * DAY
    log_requests: bool = False
    # Dynamic webhooks: Atlassian's 30-day life and 5 per app, per user, per site.
    webhook_ttl: float = 30 * DAY
    webhook_limit: int = 5
    # Deliveries: the receiver's time to answer one attempt, and a factor on the retry
    # schedule (sandbox/delivery.py), e.g. 0.001 for tests; 0 retries at once.
    delivery_timeout: float = 10.0
    delivery_retry_scale: float = 1.0

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        # The secret is listed by /_sandbox/secrets; keeping it out of here keeps it out of
        # any log that records config responses.
        data.pop("client_secret")
        return data


# host and port are fixed once the socket is bound.
_IMMUTABLE = {"host", "port"}


def apply_config_updates(config: SandboxConfig, updates: dict[str, Any]) -> SandboxConfig:
    """Return a copy of `config` with `updates` applied; ValueError names the first bad key."""
    known = {f.name: f for f in dataclasses.fields(config)}
    changes: dict[str, Any] = {}
    for key, value in updates.items():
        field = known.get(key)
        if field is None or key in _IMMUTABLE:
            raise ValueError(f"unknown or read-only config key: {key!r}")
        kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
        if kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false")
        elif kind in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{key} must be a non-negative number")
            value = int(value) if kind == "int" else float(value)
        elif not isinstance(value, str) or not value:
            raise ValueError(f"{key} must be a non-empty string")
        changes[key] = value
    return dataclasses.replace(config, **changes)
