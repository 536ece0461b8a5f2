"""Jira webhook deliveries as they arrive: the JWT checked, the body checked into a
DeliveryEvent. Nothing here trusts the request; nothing here touches the database.

Atlassian signs a delivery's `Authorization: Bearer <JWT>` with the app's client secret
(HS256 observed) and documents no claims: the signature is verified with the algorithm
pinned, `exp` is enforced when present, nothing else is required.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from integrations.atlassian.parse import _obj, _str

ALGORITHMS = ["HS256"]
# Clock skew tolerated on exp/nbf, in seconds.
JWT_LEEWAY = 5
MAX_JWT = 8 * 1024
MAX_IDENTIFIER = 128
MAX_MATCHED_IDS = 20
# Milliseconds since the epoch Jira may plausibly send (1 Jan 2000 to 1 Jan 2100).
_TIMESTAMP_RANGE = (946_684_800_000, 4_102_444_800_000)
_JWT_OPTIONS: Any = {
    "verify_signature": True,
    "verify_exp": True,
    "verify_nbf": True,
    # Atlassian documents none of these: a claim we cannot check must not refuse a delivery.
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
}


class DeliveryError(Exception):
    """A delivery the receiver refuses; `status` is the HTTP answer. Never holds the JWT."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnverifiedDeliveryError(DeliveryError):
    status = 401


class MalformedDeliveryError(DeliveryError):
    status = 400


@dataclass(frozen=True)
class DeliveryEvent:
    """One Jira event, as checked. `payload` is the whole parsed body, for signal
    receivers that need more than the fields picked out here."""

    identifier: str
    event_type: str
    webhook_ids: tuple[int, ...]
    issue_id: str
    issue_key: str
    issue_summary: str
    issue_self: str
    actor_name: str
    actor_account_id: str
    occurred_at: datetime | None
    retry: bool = False
    payload: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@sensitive_variables("authorization", "token", "secret")
def verify_jwt(*, authorization: str | None) -> None:
    """Raise UnverifiedDeliveryError unless `authorization` is `Bearer <JWT>` signed with
    our client secret (HS256) and not expired."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise UnverifiedDeliveryError("Missing bearer token.")
    if len(token) > MAX_JWT:
        raise UnverifiedDeliveryError("Token too long.")
    secret = settings.ATLASSIAN_CLIENT_SECRET
    if not secret:
        raise UnverifiedDeliveryError("No client secret to verify with.")
    try:
        jwt.decode(token, key=secret, algorithms=ALGORITHMS, options=_JWT_OPTIONS, leeway=JWT_LEEWAY)
    except jwt.ExpiredSignatureError:
        raise UnverifiedDeliveryError("Token expired.") from None
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        # The exception's text can quote the token's parts: only its class goes on.
        raise UnverifiedDeliveryError(f"Token refused ({type(exc).__name__}).") from None


def _identifier(value: str | None) -> str:
    text = (value or "").strip()
    if not text or len(text) > MAX_IDENTIFIER or not text.isprintable() or not text.isascii():
        raise MalformedDeliveryError("Missing or malformed X-Atlassian-Webhook-Identifier.")
    return text


def _ids(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list):
        return ()
    ids = [v for v in value if isinstance(v, int) and not isinstance(v, bool) and 0 < v < 2**63]
    return tuple(dict.fromkeys(ids))[:MAX_MATCHED_IDS]


def _occurred_at(value: Any) -> datetime | None:
    if isinstance(value, int) and not isinstance(value, bool) and _TIMESTAMP_RANGE[0] <= value <= _TIMESTAMP_RANGE[1]:
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    return None


def parse_delivery(*, identifier: str | None, retry: str | None, body: bytes) -> DeliveryEvent:
    """The verified delivery's body as a DeliveryEvent; MalformedDeliveryError otherwise."""
    checked_identifier = _identifier(identifier)
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise MalformedDeliveryError("The body is not JSON.") from None
    if not isinstance(payload, dict):
        raise MalformedDeliveryError("The body is not a JSON object.")
    event_type = _str(payload, "webhookEvent").strip()
    if not event_type or len(event_type) > 64:
        raise MalformedDeliveryError("The body names no webhookEvent.")
    issue = _obj(payload.get("issue"))
    fields = _obj(issue.get("fields"))
    comment = _obj(payload.get("comment"))
    # A comment's author is who acted; for issue events Jira sends the actor as `user`.
    actor = _obj(comment.get("updateAuthor")) or _obj(comment.get("author")) or _obj(payload.get("user"))
    return DeliveryEvent(
        identifier=checked_identifier,
        event_type=event_type,
        webhook_ids=_ids(payload.get("matchedWebhookIds")),
        issue_id=_str(issue, "id")[:32],
        issue_key=_str(issue, "key")[:64],
        issue_summary=_str(fields, "summary")[:500],
        issue_self=_str(issue, "self")[:1000],
        actor_name=_str(actor, "displayName")[:255],
        actor_account_id=_str(actor, "accountId")[:128],
        occurred_at=_occurred_at(payload.get("timestamp")),
        retry=bool(retry and retry.strip() not in ("", "0")),
        payload=payload,
    )
