"""The Atlassian boundary: the only code that talks HTTP to Atlassian (and imports requests).

Every call has a timeout (settings.ATLASSIAN_TIMEOUT), every JSON reply is checked at
this edge and turned into a small dataclass, and every failure becomes one of the
AtlassianError classes, split into permanent and transient ones. Tokens, codes and the
client secret never reach a log line or an exception message.

- `errors`: AtlassianError and its subclasses.
- `transport`: the per-thread Session, `_send` (timeout, no redirects), JSON decoding,
  Retry-After, the auth/api base URLs, and the mapping of API error replies.
- `parse`: helpers that check provider JSON (strings without NUL, safe image URLs).
- `oauth`: the consent URL, the token endpoint (exchange_code, refresh -> TokenSet),
  accessible_resources (-> Site) and me (-> Identity).
- `jira`: JiraClient (401 refresh + retry, 429/503 backoff) over a TokenProvider, with
  the dynamic webhook calls (register, list, refresh, delete).
- `delivery`: a webhook delivery as it arrives: its JWT verified (PyJWT, HS256 pinned),
  its body checked into a DeliveryEvent.

A new endpoint: a Jira REST call is a JiraClient method over `self.request(...)` that
checks the body with the `parse` helpers and returns a frozen dataclass; any other call
goes through `transport._send` in the module it belongs to. Export what callers use here.
Callers import the package, never a submodule: `from integrations import atlassian`;
underscored names are shared between the modules here and private to the package.
"""

from __future__ import annotations

from integrations.atlassian.delivery import (
    DeliveryError,
    DeliveryEvent,
    MalformedDeliveryError,
    UnverifiedDeliveryError,
    parse_delivery,
    verify_jwt,
)
from integrations.atlassian.errors import (
    ApiError,
    AtlassianError,
    ClientCredentialsError,
    CodeInvalidError,
    GrantRevokedError,
    InvalidResponseError,
    MissingRefreshTokenError,
    RateLimitedError,
    ScopeMismatchError,
    TransientError,
    UnauthorizedError,
)
from integrations.atlassian.jira import (
    IssuePage,
    JiraClient,
    JiraIssue,
    RegisteredWebhook,
    TokenProvider,
    WebhookRegistration,
    WebhookSpec,
    parse_expiration,
)
from integrations.atlassian.oauth import (
    EXPIRY_MARGIN,
    Identity,
    Site,
    TokenSet,
    accessible_resources,
    authorize_url,
    exchange_code,
    me,
    refresh,
)

__all__ = [
    "EXPIRY_MARGIN",
    "ApiError",
    "AtlassianError",
    "ClientCredentialsError",
    "CodeInvalidError",
    "DeliveryError",
    "DeliveryEvent",
    "GrantRevokedError",
    "Identity",
    "InvalidResponseError",
    "IssuePage",
    "JiraClient",
    "JiraIssue",
    "MalformedDeliveryError",
    "MissingRefreshTokenError",
    "RateLimitedError",
    "RegisteredWebhook",
    "ScopeMismatchError",
    "Site",
    "TokenProvider",
    "TokenSet",
    "TransientError",
    "UnauthorizedError",
    "UnverifiedDeliveryError",
    "WebhookRegistration",
    "WebhookSpec",
    "accessible_resources",
    "authorize_url",
    "exchange_code",
    "me",
    "parse_delivery",
    "parse_expiration",
    "refresh",
    "verify_jwt",
]
