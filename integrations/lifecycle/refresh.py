"""Refreshing one connection, single-flight across threads, processes and hosts.

Atlassian rotates the refresh token on every refresh and kills the whole grant when a
spent one is reused more than 10 minutes later, so two workers must never refresh one
connection at once, and a rotated pair must never be dropped. On SQLite and
PostgreSQL alike, without holding a transaction open during HTTP:

1. claim: one conditional UPDATE sets (claim_id, claimed_until) where no live claim
   exists (and, for the scheduled run, where the connection is still due); exactly one
   row changed means this worker owns the refresh;
2. read the row (tokens and the version) under the claim;
3. call Atlassian with the stored refresh token;
4. write the rotated pair back at once with compare-and-swap on the version read in
   step 2, releasing the claim in the same UPDATE, before anything else.

A crashed worker's claim lapses after CLAIM_LEASE, well inside Atlassian's 10-minute
reuse leeway, so the next run retries with the same refresh token safely.

On PostgreSQL the scheduled run claims in batches instead (BatchClaimer: UPDATE … WHERE
id IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED) RETURNING the row), so overlapping runs
split the due set rather than each trying every connection; the RETURNING is step 2's
read, and steps 3-4 are the same.

No step holds a database connection while Atlassian answers: the path hands it back
(to the pool, on PostgreSQL) after the read and again at the end.

Entry points, one per caller:
- connection_refresh_if_due: the scheduled run (lifecycle.run), one connection at a time;
- BatchClaimer + connection_refresh_claimed: the scheduled run on PostgreSQL, in batches;
- connection_refresh_now: staff's "Refresh now" (admin), unconditional, audited;
- connection_refresh_for_access: the access path (lifecycle.access), when the token
  is about to expire or Jira rejected it.
"""

from __future__ import annotations

import enum
import functools
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import OperationalError
from django.db import connection as db_connection
from django.db.models import Field, Q
from django.views.decorators.debug import sensitive_variables

from accounts.models import User
from integrations import atlassian, clock
from integrations.lifecycle.config import ConfigurationError
from integrations.lifecycle.due import DEFAULT_RULE, DueRule, expired, not_backing_off
from integrations.lifecycle.events import event_record, event_staff_refresh
from integrations.lifecycle.status import (
    UNREADABLE_REASON,
    connection_mark_needs_reconnect,
    connection_mark_unreadable,
)
from integrations.models import Actor, ConnectionStatus, EventKind, JiraConnection
from monitoring.observe import RefreshSource, refresh_observed, token_call_timed

logger = logging.getLogger(__name__)

CLAIM_LEASE = timedelta(minutes=2)
BACKOFF_BASE = timedelta(minutes=1)
BACKOFF_CAP = timedelta(hours=1)
STORE_ATTEMPTS = 3

# A due condition at a given time: DueRule.filter (the run) or due.expired (the access path).
DueCondition = Callable[..., Q]


class RefreshOutcome(enum.StrEnum):
    REFRESHED = "refreshed"
    NOT_DUE = "not_due"
    # Another worker holds the claim: its refresh is under way.
    CLAIMED_ELSEWHERE = "claimed_elsewhere"
    # Our refresh ran, but a newer write took its place (a reconnect, staff, or a worker
    # that took over after our lease lapsed): theirs stands, nothing of ours was stored.
    SUPERSEDED = "superseded"
    TRANSIENT_FAILURE = "transient_failure"
    NEEDS_RECONNECT = "needs_reconnect"
    GONE = "gone"


@dataclass(frozen=True)
class RefreshResult:
    connection_id: int
    outcome: RefreshOutcome
    message: str = ""
    retry_at: datetime | None = None
    # The failure's reason (status_reason), for the monitoring's counts.
    reason: str = ""
    # Refreshed a connection that was failing.
    recovered: bool = False


# What step 2 reads under the claim: the refresh token and the version, and what the
# outcomes need (the status it had, its failure count, the audit event's user and account).
_READ_FIELDS = ("id", "user", "account_id", "refresh_token", "scopes", "status", "failure_count", "version")


@dataclass(frozen=True)
class ClaimedRow:
    """A connection as read under its claim (step 2), by the claim itself on PostgreSQL's
    batch path (BatchClaimer's RETURNING) or by a SELECT after the one-row claim."""

    connection_id: int
    user_id: int
    account_id: str
    # None: stored, but unreadable with the configured keys (fields.TokenField).
    refresh_token: str | None = field(repr=False)
    scopes: list[str]
    status: str
    failure_count: int
    version: int

    @property
    def was_failing(self) -> bool:
        return self.status == ConnectionStatus.REFRESH_FAILING

    def event_owner(self) -> JiraConnection:
        """The connection as the audit trail needs it (its key, user and account), without
        loading it again."""
        return JiraConnection(pk=self.connection_id, user_id=self.user_id, account_id=self.account_id)


# --- Entry points ----------------------------------------------------------------------


def connection_refresh_if_due(
    *,
    connection_id: int,
    rule: DueRule = DEFAULT_RULE,
    ignore_backoff: bool = False,
) -> RefreshResult:
    """The scheduled run's refresh: only while `rule` says the connection is due and its
    backoff has ended (unless `ignore_backoff`). Raises ConfigurationError when Atlassian
    refuses our client credentials."""
    return _refresh(
        connection_id=connection_id, due=rule.filter, ignore_backoff=ignore_backoff, source=RefreshSource.SCHEDULED
    )


def connection_refresh_now(*, connection_id: int, staff: User) -> RefreshResult:
    """Staff's "Refresh now": unconditional, past any backoff. Every outcome leaves a
    staff event (a success writes it with the new expiry; anything else says what came
    of it). Raises ConfigurationError, after recording it, on refused client credentials."""
    connection = JiraConnection.objects.defer("access_token", "refresh_token").filter(pk=connection_id).first()
    try:
        result = _refresh(
            connection_id=connection_id,
            due=None,
            ignore_backoff=True,
            source=RefreshSource.STAFF,
            actor=Actor.STAFF,
            actor_user=staff,
        )
    except ConfigurationError as exc:
        if connection is not None:
            event_staff_refresh(connection=connection, staff=staff, outcome="configuration_error", message=str(exc))
        raise
    if result.outcome != RefreshOutcome.REFRESHED and connection is not None:
        event_staff_refresh(connection=connection, staff=staff, outcome=result.outcome.value, message=result.message)
    return result


def connection_refresh_claimed(*, row: ClaimedRow, claim: uuid.UUID) -> RefreshResult:
    """The batch run's refresh of a connection BatchClaimer has already claimed with `claim`
    and read (`row`): everything after the read, exactly as connection_refresh_if_due.
    Raises ConfigurationError when Atlassian refuses our client credentials."""
    return _observed(
        connection_id=row.connection_id,
        source=RefreshSource.SCHEDULED,
        work=partial(_refresh_held, row=row, claim=claim, actor=Actor.SYSTEM, actor_user=None),
    )


def connection_release(*, connection_id: int, claim: uuid.UUID) -> None:
    """Give back a claim taken by BatchClaimer that will not be refreshed (the run stopped)."""
    _release(connection_id=connection_id, claim=claim)


def connection_refresh_for_access(*, connection_id: int, rejected: bool = False) -> RefreshResult:
    """The access path's refresh: when the stored access token has expired, or at once
    when Jira `rejected` it; never during the connection's backoff."""
    # Once the stored expiry (already brought forward by atlassian.EXPIRY_MARGIN) has
    # passed: no second margin on top.
    due = None if rejected else expired
    return _refresh(connection_id=connection_id, due=due, ignore_backoff=False, source=RefreshSource.ON_DEMAND)


# --- The algorithm ---------------------------------------------------------------------


def _refresh(
    *,
    connection_id: int,
    due: DueCondition | None,
    ignore_backoff: bool,
    source: RefreshSource,
    actor: Actor = Actor.SYSTEM,
    actor_user: User | None = None,
) -> RefreshResult:
    return _observed(
        connection_id=connection_id,
        source=source,
        work=partial(
            _claim_and_refresh,
            connection_id=connection_id,
            due=due,
            ignore_backoff=ignore_backoff,
            actor=actor,
            actor_user=actor_user,
        ),
    )


def _observed(*, connection_id: int, source: RefreshSource, work: Callable[[], RefreshResult]) -> RefreshResult:
    """One refresh, counted and logged with its outcome and duration (monitoring)."""
    with refresh_observed(connection_id=connection_id, source=source) as observed:
        result = work()
        observed.finish(outcome="recovered" if result.recovered else result.outcome.value, reason=result.reason)
    return result


@sensitive_variables("refresh_token", "tokens")
def _claim_and_refresh(
    *,
    connection_id: int,
    due: DueCondition | None,
    ignore_backoff: bool,
    actor: Actor,
    actor_user: User | None,
) -> RefreshResult:
    claim = uuid.uuid4()
    if not _claim(connection_id=connection_id, claim=claim, due=due, ignore_backoff=ignore_backoff):
        return _unclaimed_outcome(connection_id=connection_id)
    return _refresh_claimed(connection_id=connection_id, claim=claim, actor=actor, actor_user=actor_user)


@sensitive_variables("refresh_token", "tokens")
def _refresh_claimed(*, connection_id: int, claim: uuid.UUID, actor: Actor, actor_user: User | None) -> RefreshResult:
    """Steps 2-4 for a connection this worker holds the claim `claim` on."""
    try:
        # The database gone: the error goes up, and the claim lapses after CLAIM_LEASE.
        row = _read(connection_id=connection_id)
    finally:
        # Atlassian may take the whole read timeout to answer: the pool's few connections
        # serve other workers meanwhile.
        hand_back_connection()
    if row is None:
        # Deleted (disconnected) since the claim: nothing to refresh or release.
        return RefreshResult(connection_id, RefreshOutcome.GONE)
    return _refresh_held(row=row, claim=claim, actor=actor, actor_user=actor_user)


@sensitive_variables("refresh_token", "tokens")
def _refresh_held(*, row: ClaimedRow, claim: uuid.UUID, actor: Actor, actor_user: User | None) -> RefreshResult:
    """Steps 3-4 for a connection this worker holds the claim `claim` on and has read
    (`row`), holding no database connection."""
    connection_id = row.connection_id
    released = False
    try:
        refresh_token = row.refresh_token
        if refresh_token is None:
            connection_mark_unreadable(connection_id=connection_id)
            return RefreshResult(
                connection_id, RefreshOutcome.NEEDS_RECONNECT, "Stored token unreadable.", reason=UNREADABLE_REASON
            )
        # The claim was taken on the wall clock; timestamps written below use the same.
        now = clock.now()
        try:
            tokens = _call_refresh(refresh_token=refresh_token)
        except atlassian.ClientCredentialsError as exc:
            raise ConfigurationError(exc.message) from None
        except atlassian.GrantRevokedError as exc:
            return _revoked(row=row, error=exc)
        except atlassian.TransientError as exc:
            return _failed(row=row, claim=claim, now=now, error=exc)
        result = _store(row=row, tokens=tokens, now=now, actor=actor, actor_user=actor_user)
        # A successful store cleared the claim in its own UPDATE: skip a round trip.
        released = result.outcome == RefreshOutcome.REFRESHED
        return result
    except ConfigurationError:
        raise
    except Exception:
        # A bug, or the database gone: the claim stays and lapses after CLAIM_LEASE, so a
        # batch run that claims again does not take this connection over and over.
        released = True
        raise
    finally:
        if not released:
            _release(connection_id=connection_id, claim=claim)
        hand_back_connection()


def hand_back_connection() -> None:
    """Return this thread's database connection: to the pool where there is one (Django
    reconnects, or takes one from the pool, at the next query). Inside a transaction it
    stays: the transaction is the caller's."""
    if not db_connection.in_atomic_block:
        db_connection.close()


def lease_free(*, now: datetime) -> Q:
    """No live claim on the row. The single-flight guarantee rests on this condition;
    the proof suite's control run replaces it (tests/support/unsafe.py) to show that
    without it connections are lost."""
    return Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)


def _claim(*, connection_id: int, claim: uuid.UUID, due: DueCondition | None, ignore_backoff: bool) -> bool:
    # The lease counts from the wall clock, never from a `now` the caller took earlier:
    # a batch that started ten minutes ago would otherwise take leases that have
    # already lapsed, and a second worker could take over mid-refresh.
    now = clock.now()
    rows = JiraConnection.objects.filter(pk=connection_id).exclude(status=ConnectionStatus.NEEDS_RECONNECT)
    if due is not None:
        # Runs that overlap all read the same due list: one already refreshed by another
        # run costs this one a single UPDATE that matches nothing, not claim-read-release.
        rows = rows.filter(due(now=now))
    if not ignore_backoff:
        rows = rows.filter(not_backing_off(now=now))
    rows = rows.filter(lease_free(now=now))
    return rows.update(claim_id=claim, claimed_until=now + CLAIM_LEASE) == 1


@dataclass(frozen=True)
class _Statement:
    """A claim statement compiled at `at`, whose datetime parameters are all `at` plus a
    fixed offset (the due rule's windows, the lease, the backoff): the same statement at
    another time only shifts them."""

    sql: str
    params: tuple[Any, ...]
    at: datetime

    def params_at(self, now: datetime) -> list[Any]:
        shift = now - self.at
        return [param + shift if isinstance(param, datetime) else param for param in self.params]


class BatchClaimer:
    """The batch claim (PostgreSQL) of one scheduled run: `UPDATE … WHERE id IN (SELECT …
    LIMIT n FOR UPDATE SKIP LOCKED) RETURNING …`, with the same conditions as the one-row
    claim. SKIP LOCKED passes over rows another run is claiming at this moment, so runs
    that overlap take disjoint rows instead of queueing on each other's locks, and each
    row is re-checked under its lock. One branch per statement: FOR UPDATE cannot be
    combined with UNION, and each branch is a range on one index. RETURNING reads each
    claimed row under the claim (step 2) in the same statement.

    Each branch's statement is built and compiled once per claimer: building and compiling
    it from the rule's Q objects cost more CPU than the rest of a refresh's database work."""

    def __init__(self, *, rule: DueRule, ignore_backoff: bool = False, user_email: str | None = None) -> None:
        self.rule = rule
        self.ignore_backoff = ignore_backoff
        self.user_email = user_email
        self._statements: dict[int, _Statement | None] = {}

    def claim(self, *, branch: int, size: int, claim: uuid.UUID) -> list[ClaimedRow]:
        """Claim up to `size` connections due by branch `branch` for `claim`."""
        # The lease counts from the wall clock (see _claim).
        now = clock.now()
        if branch not in self._statements:
            self._statements[branch] = self._reusable(branch=branch, now=now)
        statement = self._statements[branch] or self._compile(branch=branch, now=now)
        with db_connection.cursor() as cursor:
            cursor.execute(statement.sql, [claim, now + CLAIM_LEASE, *statement.params_at(now), size])
            claimed = [_claimed_row(values) for values in cursor.fetchall()]
        hand_back_connection()
        return claimed

    def _reusable(self, *, branch: int, now: datetime) -> _Statement | None:
        """The branch's statement if compiling it at another time only shifts its datetimes
        (true of every condition built from `now`); None to compile it for each claim."""
        statement = self._compile(branch=branch, now=now)
        probe_at = now + timedelta(days=1)
        probe = self._compile(branch=branch, now=probe_at)
        if probe.sql != statement.sql or probe.params != tuple(statement.params_at(probe_at)):
            return None
        return statement

    def _compile(self, *, branch: int, now: datetime) -> _Statement:
        condition = self.rule.branches(now=now)[branch]
        rows = (
            JiraConnection.objects.exclude(status=ConnectionStatus.NEEDS_RECONNECT)
            .filter(condition, lease_free(now=now))
            .order_by(self.rule.CLAIM_ORDER[branch])
        )
        if not self.ignore_backoff:
            rows = rows.filter(not_backing_off(now=now))
        if self.user_email:
            rows = rows.filter(user__email__iexact=self.user_email.strip())
        select, params = rows.values("pk").query.sql_with_params()
        table = _table()
        sql = (
            f"UPDATE {table} SET {_column('claim_id')} = %s, {_column('claimed_until')} = %s "  # noqa: S608
            f"WHERE {_column('id')} IN ({select} LIMIT %s FOR UPDATE OF {table} SKIP LOCKED) "
            f"RETURNING {_read_columns()}"
        )
        return _Statement(sql=sql, params=tuple(params), at=now)


def _model_field(name: str) -> Field[Any, Any]:
    model_field = JiraConnection._meta.get_field(name)
    # Every name used here is one of the row's own columns, never a reverse relation.
    assert isinstance(model_field, Field)
    return model_field


def _column(name: str) -> str:
    """The column of JiraConnection's field `name`, quoted for this database."""
    column = _model_field(name).column
    assert column is not None
    return db_connection.ops.quote_name(column)


def _table() -> str:
    return db_connection.ops.quote_name(JiraConnection._meta.db_table)


def _read_columns() -> str:
    return ", ".join(_column(name) for name in _READ_FIELDS)


@sensitive_variables("values", "refresh_token")
def _claimed_row(values: tuple[Any, ...]) -> ClaimedRow:
    """A row of _READ_FIELDS as the database returns it, loaded as the ORM would load it
    (the token decrypted, the scopes parsed)."""
    connection_id, user_id, account_id, stored_token, stored_scopes, status, failure_count, version = values
    # Neither field's conversion looks at the expression, which a raw row has none of.
    token_field: Any = _model_field("refresh_token")
    scopes_field: Any = _model_field("scopes")
    refresh_token = token_field.from_db_value(stored_token, None, db_connection)
    scopes = scopes_field.from_db_value(stored_scopes, None, db_connection)
    return ClaimedRow(
        connection_id=connection_id,
        user_id=user_id,
        account_id=account_id,
        refresh_token=refresh_token,
        scopes=scopes,
        status=status,
        failure_count=failure_count,
        version=version,
    )


def _read(*, connection_id: int) -> ClaimedRow | None:
    """Step 2 after a one-row claim: one SELECT by key, no queryset built."""
    sql = f"SELECT {_read_columns()} FROM {_table()} WHERE {_column('id')} = %s"  # noqa: S608
    with db_connection.cursor() as cursor:
        cursor.execute(sql, [connection_id])
        values = cursor.fetchone()
    return None if values is None else _claimed_row(values)


def _unclaimed_outcome(*, connection_id: int) -> RefreshResult:
    """Why a claim failed: gone, needs reconnect, backing off, another worker's lease,
    or no longer due."""
    row = (
        JiraConnection.objects.filter(pk=connection_id)
        .values_list("status", "claimed_until", "next_attempt_at")
        .first()
    )
    if row is None:
        return RefreshResult(connection_id, RefreshOutcome.GONE)
    status, claimed_until, next_attempt_at = row
    now = clock.now()
    if status == ConnectionStatus.NEEDS_RECONNECT:
        return RefreshResult(connection_id, RefreshOutcome.NEEDS_RECONNECT, "Needs reconnect.")
    if (claimed_until is None or claimed_until < now) and next_attempt_at is not None and next_attempt_at > now:
        # Another worker failed it since the due list was read: not ours to retry yet.
        return RefreshResult(connection_id, RefreshOutcome.NOT_DUE, "Backing off.", next_attempt_at)
    if claimed_until is not None and claimed_until >= now:
        return RefreshResult(connection_id, RefreshOutcome.CLAIMED_ELSEWHERE, "Another refresh is under way.")
    # Free and not backing off, yet the claim matched nothing: it was no longer due
    # (another run refreshed it since the due list was read).
    return RefreshResult(connection_id, RefreshOutcome.NOT_DUE)


def _release(*, connection_id: int, claim: uuid.UUID) -> None:
    JiraConnection.objects.filter(pk=connection_id, claim_id=claim).update(claim_id=None, claimed_until=None)


def backoff(*, failures: int, retry_after: float | None) -> timedelta:
    """How long a failing connection waits before its next scheduled try."""
    if retry_after is not None:
        return timedelta(seconds=retry_after)
    # The exponent is bounded: 2**1024 no longer fits a float, and a connection failing
    # hourly reaches that many failures in six weeks.
    delay = BACKOFF_BASE.total_seconds() * 2 ** min(max(0, failures - 1), 32)
    # The cap holds after the jitter too: "at most an hour" means at most an hour.
    return timedelta(seconds=min(BACKOFF_CAP.total_seconds(), delay * random.uniform(0.7, 1.3)))


@sensitive_variables("refresh_token", "tokens")
def _call_refresh(*, refresh_token: str) -> atlassian.TokenSet:
    try:
        with token_call_timed():
            return atlassian.refresh(refresh_token=refresh_token)
    except atlassian.TransientError as exc:
        # No status (timeout, reset), a gateway's 502/504 or a garbled 200: Atlassian
        # may have rotated and we never saw the new pair. The same token is accepted
        # again for 10 minutes, so one immediate retry recovers the pair instead of
        # waiting a backoff that could outlast the leeway.
        ambiguous = exc.status in (None, 502, 504) or isinstance(exc, atlassian.InvalidResponseError)
        if not ambiguous:
            raise
        logger.info("Refresh reply lost (%s); retrying once with the same token.", exc.reason)
        with token_call_timed():
            return atlassian.refresh(refresh_token=refresh_token)


def _update_surviving_outage(update: Callable[[], int]) -> int:
    """An UPDATE (`update` sends it and returns the rows changed), retried through a brief
    database outage (a locked SQLite file, a PostgreSQL failover): once Atlassian has
    rotated the pair, a dropped write costs the grant. If a failed attempt did commit,
    the retry loses its compare-and-swap: harmless."""
    for attempt in range(1, STORE_ATTEMPTS + 1):
        try:
            return update()
        except OperationalError:
            # Inside a caller's transaction the error has aborted it: nothing to retry.
            if attempt == STORE_ATTEMPTS or db_connection.in_atomic_block:
                raise
            logger.warning("Database write failed (attempt %d of %d); retrying.", attempt, STORE_ATTEMPTS)
            db_connection.close()
            clock.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


# What a store sets from the reply, each through its field's conversion (Fernet for the
# tokens, JSON, the database's datetime format), and the columns set to the store's time.
_STORE_FROM_REPLY = ("access_token", "refresh_token", "access_token_expires_at", "scopes")
_STORE_AT_NOW = ("tokens_issued_at", "last_refreshed_at", "updated_at")


@functools.cache
def _store_sql(vendor: str) -> str:
    """The store's compare-and-swap UPDATE for this database (`vendor`): the rotated pair,
    the connection active again with its failure state cleared, the claim released, and
    the refresh counted, over the version read under the claim only. A connection marked
    needs_reconnect meanwhile stays marked."""
    assignments = [f"{_column(name)} = %s" for name in (*_STORE_FROM_REPLY, *_STORE_AT_NOW, "status")]
    assignments += [f"{_column(name)} = ''" for name in ("status_reason", "status_message")]
    assignments += [f"{_column('failure_count')} = 0"]
    assignments += [f"{_column(name)} = NULL" for name in ("next_attempt_at", "claim_id", "claimed_until")]
    # Counted up in place, as F() would.
    assignments += [f"{_column(name)} = {_column(name)} + 1" for name in ("refresh_count", "version")]
    return (
        f"UPDATE {_table()} SET {', '.join(assignments)} "  # noqa: S608
        f"WHERE {_column('id')} = %s AND {_column('version')} = %s AND NOT ({_column('status')} = %s)"
    )


@sensitive_variables("tokens", "values", "params")
def _store_update(*, row: ClaimedRow, tokens: atlassian.TokenSet, now: datetime) -> int:
    """Step 4's UPDATE, written once (_store_sql): built and compiled by the ORM for every
    refresh, it cost about a third of the refresh's CPU."""
    values = (
        tokens.access_token,
        # No refresh_token in the reply: the old one is still the live one.
        tokens.refresh_token or row.refresh_token,
        tokens.expires_at,
        tokens.scopes or row.scopes,
    )
    params = [
        _model_field(name).get_db_prep_save(value, db_connection)
        for name, value in zip(_STORE_FROM_REPLY, values, strict=True)
    ]
    params += [_model_field("updated_at").get_db_prep_save(now, db_connection)] * len(_STORE_AT_NOW)
    params += [ConnectionStatus.ACTIVE.value, row.connection_id, row.version, ConnectionStatus.NEEDS_RECONNECT.value]
    with db_connection.cursor() as cursor:
        cursor.execute(_store_sql(db_connection.vendor), params)
        return int(cursor.rowcount)


@sensitive_variables("tokens")
def _store(
    *,
    row: ClaimedRow,
    tokens: atlassian.TokenSet,
    now: datetime,
    actor: Actor,
    actor_user: User | None,
) -> RefreshResult:
    # First thing after the reply: persist the rotated pair (CAS on the version). A
    # connection marked needs_reconnect meanwhile (by staff, or by a worker that met a
    # dead grant after our lease lapsed) stays marked: its grant is gone or unwanted.
    written = _update_surviving_outage(partial(_store_update, row=row, tokens=tokens, now=now))
    if written != 1:
        logger.warning("Refresh of connection %s superseded by a newer write.", row.connection_id)
        return RefreshResult(
            row.connection_id, RefreshOutcome.SUPERSEDED, "Newer tokens were written meanwhile; they stand."
        )
    # A routine refresh is counted on the row (refresh_count, last_refreshed_at), not
    # written to the audit trail: the trail grows with what changes, not with time.
    if actor == Actor.STAFF or row.was_failing:
        event_record(
            connection=row.event_owner(),
            kind=EventKind.STAFF_REFRESH if actor == Actor.STAFF else EventKind.RECOVERED,
            actor=actor,
            actor_user=actor_user,
            message=f"Access token valid until {tokens.expires_at:%Y-%m-%d %H:%M:%S} UTC",
            detail={"rotated": tokens.refresh_token is not None, "version": row.version + 1},
        )
    return RefreshResult(row.connection_id, RefreshOutcome.REFRESHED, recovered=row.was_failing)


def _revoked(*, row: ClaimedRow, error: atlassian.GrantRevokedError) -> RefreshResult:
    message = (
        "Atlassian no longer accepts this connection (it was revoked, expired, or the password "
        "changed). Reconnect to continue."
    )
    changed = connection_mark_needs_reconnect(
        connection_id=row.connection_id, reason=error.reason, message=message, only_if_version=row.version
    )
    if not changed:
        # The version moved while we waited: another worker refreshed first and our
        # token was simply the old one. Not the user's problem.
        return RefreshResult(
            row.connection_id, RefreshOutcome.SUPERSEDED, "Another refresh stored newer tokens first; no change."
        )
    return RefreshResult(row.connection_id, RefreshOutcome.NEEDS_RECONNECT, message, reason=error.reason)


def _failed(*, row: ClaimedRow, claim: uuid.UUID, now: datetime, error: atlassian.TransientError) -> RefreshResult:
    failures = row.failure_count + 1
    retry_at = now + backoff(failures=failures, retry_after=error.retry_after)
    written = JiraConnection.objects.filter(pk=row.connection_id, claim_id=claim).update(
        status=ConnectionStatus.REFRESH_FAILING,
        status_reason=error.reason[:64],
        status_message=error.message[:500],
        failure_count=failures,
        next_attempt_at=retry_at,
        updated_at=now,
    )
    if written != 1:
        # Our lease lapsed and another worker took over (and may have succeeded): its
        # state stands, and this stale failure is not the connection's.
        logger.warning("Refresh of connection %s failed after losing its claim (%s).", row.connection_id, error.reason)
        return RefreshResult(
            row.connection_id, RefreshOutcome.SUPERSEDED, "Failed after another worker took over; its result stands."
        )
    if row.status == ConnectionStatus.ACTIVE:
        # The turn to failing is the event; later failures count on the row (failure_count,
        # status_reason, next_attempt_at) until it recovers or needs reconnecting.
        event_record(
            connection=row.event_owner(),
            kind=EventKind.REFRESH_FAILED,
            message=error.message,
            detail={"reason": error.reason, "status": error.status, "retry_at": retry_at.isoformat()},
        )
    logger.warning("Refresh of connection %s failed (%s); retry at %s", row.connection_id, error.reason, retry_at)
    return RefreshResult(row.connection_id, RefreshOutcome.TRANSIENT_FAILURE, error.message, retry_at, error.reason)
