"""OAuth state: issued per flow, kept server-side in the session, used once.

Each pending flow is stored under one session key as {state: {"user": id, "at": ts}},
so several tabs can each run a flow; the oldest are dropped past MAX_PENDING.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.sessions.backends.base import SessionBase

from integrations import clock

SESSION_KEY = "jira_oauth_states"
STATE_TTL = timedelta(minutes=10)
MAX_PENDING = 5


class StateError(Exception):
    """The callback's state is missing, unknown, expired, or not this user's."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class PendingFlow:
    state: str
    user_id: int


def state_issue(*, session: SessionBase, user_id: int) -> str:
    state = secrets.token_urlsafe(32)  # 256 random bits
    pending: dict[str, dict[str, float | int]] = dict(session.get(SESSION_KEY) or {})
    pending[state] = {"user": user_id, "at": clock.now().timestamp()}
    if len(pending) > MAX_PENDING:
        # Insertion order, not the timestamps: a coarse or frozen clock ties them, and
        # the state just issued (the one on its way to Atlassian) must never be dropped.
        pending = dict(list(pending.items())[-MAX_PENDING:])
    session[SESSION_KEY] = pending
    return state


def state_consume(*, session: SessionBase, state: str | None, user_id: int) -> PendingFlow:
    """Pop the state (at first sight, whatever the outcome) and check it."""
    if not state:
        raise StateError("state_missing", "The reply from Atlassian carried no state.")
    pending: dict[str, dict[str, float | int]] = dict(session.get(SESSION_KEY) or {})
    entry = pending.pop(state, None) if len(state) <= 128 else None
    now = clock.now().timestamp()
    # Expired entries go too, so the session does not keep dead states around.
    pending = {k: v for k, v in pending.items() if now - float(v["at"]) <= STATE_TTL.total_seconds()}
    if pending:
        session[SESSION_KEY] = pending
    else:
        session.pop(SESSION_KEY, None)
    # Saved now, not by SessionMiddleware: it skips the save on a 5xx response (a
    # failed token exchange answers 502/504), which would leave the state replayable.
    session.save()
    if entry is None:
        raise StateError(
            "state_unknown",
            "This sign-in reply does not belong to a Jira connection started in this browser session.",
        )
    if int(entry["user"]) != user_id:
        raise StateError("state_other_user", "This Jira connection was started by a different portal user.")
    if now - float(entry["at"]) > STATE_TTL.total_seconds():
        raise StateError("state_expired", "This Jira connection attempt took too long and expired.")
    return PendingFlow(state=state, user_id=user_id)
