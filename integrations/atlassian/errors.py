"""Every failure the Atlassian boundary raises, split into permanent and transient ones.

A `reason` becomes the connection's status_reason; messages never carry a token, a
code or the client secret.
"""

from __future__ import annotations


class AtlassianError(Exception):
    """Base class. `permanent` errors need the user to reconnect; others may pass."""

    permanent: bool = False
    reason: str = "atlassian_error"

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after


class TransientError(AtlassianError):
    """Network trouble, timeouts, 429, 5xx, or a garbled reply: try again later."""

    reason = "transient"


class RateLimitedError(TransientError):
    reason = "rate_limited"


class InvalidResponseError(TransientError):
    """Atlassian answered 2xx with a body that is not what the docs describe."""

    reason = "invalid_response"


class GrantRevokedError(AtlassianError):
    """invalid_grant / unauthorized_client: the refresh token is dead for good."""

    permanent = True
    reason = "grant_revoked"


class CodeInvalidError(AtlassianError):
    """The authorization code was refused (late, reused, or redirect_uri mismatch)."""

    permanent = True
    reason = "code_invalid"


class ClientCredentialsError(AtlassianError):
    """Our client id/secret were refused: the app's misconfiguration, no user's fault."""

    reason = "client_credentials"


class MissingRefreshTokenError(AtlassianError):
    """No refresh_token in a code exchange: offline_access is missing from the scopes."""

    reason = "missing_offline_access"


class UnauthorizedError(AtlassianError):
    """A 401 from an API call: the access token is expired or revoked."""

    reason = "unauthorized"


class ScopeMismatchError(AtlassianError):
    """The gateway's 401 "scope does not match": refreshing cannot help."""

    permanent = True
    reason = "scope_mismatch"


class ApiError(AtlassianError):
    """Any other non-2xx reply from a Jira REST call (400, 403, 404, 410…)."""

    reason = "api_error"
