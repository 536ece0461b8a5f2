"""All mutable sandbox state, behind one lock, and the OAuth rules that change it.

Methods without a leading underscore take the lock themselves; `_`-methods expect it held.
Token-endpoint methods return `(status, body)` exactly as Atlassian would answer.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sandbox import webhooks
from sandbox.config import SandboxConfig, apply_config_updates
from sandbox.delivery import Deliverer, DeliverySettings
from sandbox.faults import ENDPOINTS, KINDS, FaultDecision, FaultPlan
from sandbox.seed import (
    ADA,
    API_BASE,
    SITES,
    STATUS_NAMES,
    USERS,
    Issue,
    Site,
    User,
    build_issues,
    jira_datetime,
    status_json,
)
from sandbox.webhooks import ChangeItem, Comment, IssueEvent, Webhook, WebhookSpec

TokenAnswer = tuple[int, dict[str, Any]]

INVALID_CODE: TokenAnswer = (400, {"error": "invalid_request", "error_description": "authorization_code is invalid"})
INVALID_REDIRECT: TokenAnswer = (400, {"error": "invalid_request", "error_description": "redirect_uri is invalid"})
DEAD_GRANT: TokenAnswer = (403, {"error": "invalid_grant", "error_description": "Unknown or invalid refresh token."})
DEAD_GRANT_UNAUTHORIZED_CLIENT: TokenAnswer = (
    403,
    {"error": "unauthorized_client", "error_description": "refresh_token is invalid"},
)

COUNTER_NAMES = (
    "refreshes",
    "code_exchanges",
    "reuse_detections",
    "leeway_reuses",
    "grants_revoked",
    "faults_injected",
    # Not in the brief's list; useful when reading a run.
    "grants_replaced",
    "grants_minted",
    "user_revocations",
)


@dataclass
class AuthCode:
    code: str
    client_id: str
    redirect_uri: str
    account_id: str
    scopes: tuple[str, ...]
    issued_at: float
    used: bool = False


@dataclass
class Grant:
    grant_id: str
    account_id: str
    scopes: tuple[str, ...]
    site_ids: tuple[str, ...]
    created_at: float
    revoked_at: float | None = None
    # "reuse_detected", "user_revoked" or "replaced" (a new consent by the same account).
    revoked_reason: str | None = None
    access_tokens: list[str] = field(default_factory=list)
    refresh_tokens: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "grant_id": self.grant_id,
            "account_id": self.account_id,
            "scopes": " ".join(self.scopes),
            "site_ids": list(self.site_ids),
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
            "revoked_reason": self.revoked_reason,
            "access_tokens": len(self.access_tokens),
            "refresh_tokens": len(self.refresh_tokens),
        }


@dataclass
class AccessToken:
    grant_id: str
    issued_at: float
    expires_at: float


@dataclass
class RefreshToken:
    grant_id: str
    issued_at: float
    spent_at: float | None = None


@dataclass(frozen=True)
class RefreshEvent:
    at: float
    account_id: str
    grant_id: str
    # "rotated", "leeway_reuse", "reuse_detected", "dead" (unknown/revoked/expired token).
    outcome: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


_JWT_HEADER = _b64(json.dumps({"kid": "sandbox", "alg": "RS256"}).encode())


def _jwt_like(payload_bytes: int) -> str:
    # Real Atlassian tokens are JWTs of 1-2 KB; opaque short strings here would hide a
    # too-narrow database column until production.
    return f"{_JWT_HEADER}.{secrets.token_urlsafe(payload_bytes)}.{secrets.token_urlsafe(256)}"


def new_access_token() -> str:
    return _jwt_like(600)


def new_refresh_token() -> str:
    return _jwt_like(400)


def new_code() -> str:
    return secrets.token_urlsafe(48)


class State:
    def __init__(self, config: SandboxConfig) -> None:
        self.lock = threading.Lock()
        self.initial_config = dataclasses.replace(config)
        self.config = config
        self.sites: dict[str, Site] = {s.cloud_id: s for s in SITES}
        self.seed_users: dict[str, User] = {u.account_id: u for u in USERS}
        self.deliveries = Deliverer(self._delivery_settings)
        # Ids keep counting across resets, so a stale id from before one never names a new record.
        self._webhook_seq = 9999
        self._comment_seq = 10499
        self._changelog_seq = 10099
        # Every secret ever issued, kept across resets so a test can scan logs for all of them.
        self.issued_codes: list[str] = []
        self.issued_access_tokens: list[str] = []
        self.issued_refresh_tokens: list[str] = []
        self._clear()

    def _clear(self) -> None:
        self.clock_offset = 0.0
        self.accounts: dict[str, User] = dict(self.seed_users)
        self.codes: dict[str, AuthCode] = {}
        self.grants: dict[str, Grant] = {}
        self.grant_by_account: dict[str, str] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.request_counts: dict[str, int] = dict.fromkeys(ENDPOINTS, 0)
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        # faults_injected split by kind, so a fault proof can show every kind fired.
        self.faults_by_kind: dict[str, int] = dict.fromkeys(sorted(KINDS), 0)
        # Successful refreshes per account, leeway reuses included (they are also counted
        # separately below): a correct single-flight client shows exactly 1 per cycle.
        self.refresh_count_by_account: Counter[str] = Counter()
        self.leeway_reuses_by_account: Counter[str] = Counter()
        self.refresh_events: list[RefreshEvent] = []
        self.faults = FaultPlan()
        self._bench_seq = 0
        # Issues change (controls), so a reset restores the seed.
        self.issues: dict[str, list[Issue]] = build_issues()
        self.comments: dict[str, list[Comment]] = {}
        self.webhooks: dict[int, Webhook] = {}
        self.deliveries.clear()

    # ---- clock -------------------------------------------------------------------------
    def now(self) -> float:
        return time.time() + self.clock_offset

    def advance_clock(self, seconds: float) -> float:
        with self.lock:
            self.clock_offset += seconds
            return self.clock_offset

    # ---- control -----------------------------------------------------------------------
    def reset(self) -> None:
        with self.lock:
            self._clear()
            self.config = dataclasses.replace(self.initial_config)

    def update_config(self, updates: dict[str, Any]) -> SandboxConfig:
        with self.lock:
            self.config = apply_config_updates(self.config, updates)
            return self.config

    def set_faults(self, payload: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.faults.configure(payload)
            return self.faults.to_json()

    def begin_request(self, endpoint: str) -> FaultDecision | None:
        with self.lock:
            self.request_counts[endpoint] = self.request_counts.get(endpoint, 0) + 1
            decision = self.faults.decide(endpoint)
            if decision is not None and decision.kind is not None:
                self.counters["faults_injected"] += 1
                self.faults_by_kind[decision.kind] += 1
            return decision

    def counters_snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": dict(self.request_counts),
                **self.counters,
                "faults_by_kind": dict(self.faults_by_kind),
                "deliveries": self.deliveries.counters(),
            }

    def secrets_snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "client_secret": self.config.client_secret,
                "codes": list(self.issued_codes),
                "access_tokens": list(self.issued_access_tokens),
                "refresh_tokens": list(self.issued_refresh_tokens),
            }

    def grant_for(self, account_id: str) -> Grant | None:
        with self.lock:
            grant_id = self.grant_by_account.get(account_id)
            return self.grants.get(grant_id) if grant_id else None

    def grants_snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return [g.to_json() for g in self.grants.values()]

    def refreshes_snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "by_account": dict(self.refresh_count_by_account),
                "leeway_reuses_by_account": dict(self.leeway_reuses_by_account),
            }

    def revoke_account(self, account_id: str) -> bool:
        """What a user does at id.atlassian.com > Connected apps."""
        with self.lock:
            grant_id = self.grant_by_account.get(account_id)
            grant = self.grants.get(grant_id) if grant_id else None
            if grant is None or grant.revoked_at is not None:
                return False
            self._revoke(grant, "user_revoked")
            self.counters["user_revocations"] += 1
            return True

    def mint_grants(self, account_id: str | None, scopes: tuple[str, ...], count: int) -> list[dict[str, Any]]:
        """Grants without the browser flow; count > 1 gives each its own synthetic account."""
        with self.lock:
            now = self.now()
            template = self.accounts.get(account_id or ADA) or self.seed_users[ADA]
            minted: list[dict[str, Any]] = []
            for _ in range(count):
                if count > 1 or account_id is None:
                    self._bench_seq += 1
                    user = self._synthetic_user(f"bench:{self._bench_seq:06d}", template)
                elif account_id in self.accounts:
                    user = self.accounts[account_id]
                else:
                    user = self._synthetic_user(account_id, template)
                grant = self._create_grant(user.account_id, scopes, now)
                answer = self._issue_tokens(grant, now)
                minted.append({"account_id": user.account_id, **answer})
            self.counters["grants_minted"] += count
            return minted

    def _synthetic_user(self, account_id: str, template: User) -> User:
        slug = account_id.replace(":", "-")
        user = User(
            account_id=account_id,
            name=f"Bench User {account_id.rsplit(':', 1)[-1]}",
            email=f"{slug}@example.com",
            nickname=slug,
            avatar=slug,
            zoneinfo="UTC",
            locale="en-US",
            site_ids=template.site_ids,
        )
        self.accounts[account_id] = user
        return user

    # ---- authorization codes -----------------------------------------------------------
    def create_code(self, *, client_id: str, redirect_uri: str, account_id: str, scopes: tuple[str, ...]) -> str:
        with self.lock:
            code = new_code()
            self.codes[code] = AuthCode(code, client_id, redirect_uri, account_id, scopes, self.now())
            self.issued_codes.append(code)
            return code

    def exchange_code(self, *, code: str, redirect_uri: str, client_id: str) -> TokenAnswer:
        with self.lock:
            now = self.now()
            auth = self.codes.get(code)
            if auth is None or auth.used or now >= auth.issued_at + self.config.code_ttl or auth.client_id != client_id:
                return INVALID_CODE
            if redirect_uri != auth.redirect_uri:
                return INVALID_REDIRECT
            auth.used = True
            grant = self._create_grant(auth.account_id, auth.scopes, now)
            self.counters["code_exchanges"] += 1
            return 200, self._issue_tokens(grant, now)

    # ---- refresh -----------------------------------------------------------------------
    def refresh(self, token: str) -> TokenAnswer:
        with self.lock:
            now = self.now()
            record = self.refresh_tokens.get(token)
            grant = self.grants.get(record.grant_id) if record else None
            if record is None or grant is None:
                return self._dead_answer()
            if not self._grant_alive(grant, now):
                self._event(now, grant, "dead")
                return self._dead_answer()
            if record.spent_at is not None:
                # Strict `<`: with leeway 0 every reuse is a reuse.
                if now - record.spent_at < self.config.leeway:
                    self.counters["leeway_reuses"] += 1
                    self.counters["refreshes"] += 1
                    self.leeway_reuses_by_account[grant.account_id] += 1
                    self.refresh_count_by_account[grant.account_id] += 1
                    self._event(now, grant, "leeway_reuse")
                    return 200, self._issue_tokens(grant, now)
                self.counters["reuse_detections"] += 1
                self._revoke(grant, "reuse_detected")
                self._event(now, grant, "reuse_detected")
                return self._dead_answer()
            if now >= record.issued_at + self.config.refresh_idle_ttl:
                self._event(now, grant, "dead")
                return self._dead_answer()
            record.spent_at = now
            self.counters["refreshes"] += 1
            self.refresh_count_by_account[grant.account_id] += 1
            self._event(now, grant, "rotated")
            return 200, self._issue_tokens(grant, now)

    # ---- bearer tokens -----------------------------------------------------------------
    def authenticate(self, access_token: str) -> tuple[Grant, User] | None:
        with self.lock:
            now = self.now()
            record = self.access_tokens.get(access_token)
            if record is None or now >= record.expires_at:
                return None
            grant = self.grants.get(record.grant_id)
            if grant is None or not self._grant_alive(grant, now):
                return None
            return grant, self.accounts[grant.account_id]

    def user_with_avatar(self, avatar: str) -> User | None:
        with self.lock:
            return next((u for u in self.accounts.values() if u.avatar == avatar), None)

    # ---- dynamic webhooks (per app, user and site) -------------------------------------
    def register_webhooks(
        self, *, account_id: str, site_id: str, url: str, specs: list[WebhookSpec]
    ) -> list[dict[str, Any]]:
        """Jira's webhookRegistrationResult, in request order; RequestError for a second URL."""
        with self.lock:
            now = self.now()
            client_id = self.config.client_id
            live = self._live_webhooks(now)
            if any(w.url != url for w in live if w.client_id == client_id and w.site_id == site_id):
                raise webhooks.RequestError(webhooks.ONE_URL_PER_APP)
            count = len(self._owned(live, account_id, site_id))
            limit = self.config.webhook_limit
            results: list[dict[str, Any]] = []
            for spec in specs:
                errors, jql_filter = webhooks.spec_errors(spec)
                if not errors and count >= limit:
                    errors = [webhooks.limit_error(limit)]
                if errors:
                    results.append({"errors": errors})
                    continue
                self._webhook_seq += 1
                self.webhooks[self._webhook_seq] = Webhook(
                    id=self._webhook_seq,
                    client_id=client_id,
                    account_id=account_id,
                    site_id=site_id,
                    url=url,
                    spec=spec,
                    filter=jql_filter,
                    expires_at=now + self.config.webhook_ttl,
                )
                count += 1
                results.append({"createdWebhookId": self._webhook_seq})
            return results

    def list_webhooks(self, *, account_id: str, site_id: str) -> list[dict[str, Any]]:
        with self.lock:
            owned = self._owned(self._live_webhooks(self.now()), account_id, site_id)
            return [w.to_json() for w in sorted(owned, key=lambda w: w.id)]

    def refresh_webhooks(self, *, account_id: str, site_id: str, ids: list[int]) -> float:
        """The new expiry; ids that are unknown, expired or someone else's are ignored."""
        with self.lock:
            now = self.now()
            expires_at = now + self.config.webhook_ttl
            wanted = set(ids)
            for hook in self._owned(self._live_webhooks(now), account_id, site_id):
                if hook.id in wanted:
                    hook.expires_at = expires_at
            return expires_at

    def delete_webhooks(self, *, account_id: str, site_id: str, ids: list[int]) -> None:
        with self.lock:
            wanted = set(ids)
            for hook in self._owned(self._live_webhooks(self.now()), account_id, site_id):
                if hook.id in wanted:
                    del self.webhooks[hook.id]

    def webhooks_snapshot(self) -> list[dict[str, Any]]:
        """Every live webhook, whoever owns it (the /_sandbox/webhooks control)."""
        with self.lock:
            return [
                {**w.to_json(), "client_id": w.client_id, "account_id": w.account_id, "site_id": w.site_id}
                for w in self._live_webhooks(self.now())
            ]

    def _live_webhooks(self, now: float) -> list[Webhook]:
        # An expired webhook is gone for good, as in Jira: refreshing it later does nothing.
        for hook_id in [i for i, w in self.webhooks.items() if now >= w.expires_at]:
            del self.webhooks[hook_id]
        return list(self.webhooks.values())

    def _owned(self, live: list[Webhook], account_id: str, site_id: str) -> list[Webhook]:
        client_id = self.config.client_id
        return [w for w in live if (w.client_id, w.account_id, w.site_id) == (client_id, account_id, site_id)]

    def _delivery_settings(self) -> DeliverySettings:
        config = self.config
        return DeliverySettings(
            client_secret=config.client_secret,
            timeout=config.delivery_timeout,
            retry_scale=config.delivery_retry_scale,
        )

    # ---- issue changes (the controls), each delivered to matching webhooks --------------
    def issue_view(self, key: str, origin: str) -> dict[str, Any] | None:
        """An issue as webhook payloads show it, with its comments (the controls' answer)."""
        with self.lock:
            issue = self._find(key)
            if issue is None:
                return None
            site = self.sites[issue.site_id]
            view = webhooks.issue_json(site, issue, self.accounts, origin)
            view["comments"] = [
                webhooks.comment_json(site, issue, c, self.accounts[c.author_id], origin)
                for c in self.comments.get(issue.key, [])
            ]
            return view

    def change_issue(self, *, key: str, changes: dict[str, Any], actor_id: str | None, origin: str) -> Issue:
        """Apply summary / status / assignee changes; ValueError says what is wrong.

        Nothing is written unless every change is valid; an unchanged issue fires no event.
        """
        with self.lock:
            issue, site, actor = self._issue_and_actor(key, actor_id)
            unknown = set(changes) - {"summary", "status", "assignee"}
            if unknown:
                raise ValueError(f"Unknown fields: {', '.join(sorted(unknown))}.")
            fields = dict(issue.fields)
            items: list[ChangeItem] = []
            assignee_id = issue.assignee_id
            status_name = issue.status_name
            if "summary" in changes:
                summary = changes["summary"]
                if not isinstance(summary, str) or not summary.strip() or len(summary) > 255:
                    raise ValueError("summary must be 1 to 255 characters.")
                summary = summary.strip()
                if summary != fields["summary"]:
                    items.append(ChangeItem("summary", None, fields["summary"], None, summary))
                    fields["summary"] = summary
            if "status" in changes:
                status_name = changes["status"]
                if status_name not in STATUS_NAMES:
                    raise ValueError(f"status must be one of: {', '.join(STATUS_NAMES)}.")
                if status_name != issue.status_name:
                    old, new = issue.fields["status"], status_json(site, status_name)
                    items.append(ChangeItem("status", old["id"], old["name"], new["id"], new["name"]))
                    fields["status"] = new
            if "assignee" in changes:
                assignee_id = changes["assignee"] or None
                user = self.accounts.get(assignee_id) if isinstance(assignee_id, str) else None
                if assignee_id is not None and (user is None or site.cloud_id not in user.site_ids):
                    raise ValueError(f"User '{assignee_id}' cannot be assigned issues on {site.name}.")
                if assignee_id != issue.assignee_id:
                    before = self.accounts[issue.assignee_id] if issue.assignee_id else None
                    items.append(
                        ChangeItem(
                            "assignee",
                            before.account_id if before else None,
                            before.name if before else None,
                            user.account_id if user else None,
                            user.name if user else None,
                        )
                    )
                    fields["assignee"] = user.jira_user_json(site, API_BASE) if user else None
            if not items:
                return issue
            changed = self._store_issue(issue, fields, assignee_id=assignee_id, status_name=status_name)
            self._changelog_seq += 1
            # Jira's issue_event_type_name for what changed.
            only = {i.field for i in items}
            if only == {"assignee"}:
                type_name = "issue_assigned"
            elif "status" in only:
                type_name = "issue_generic"
            else:
                type_name = "issue_updated"
            event = IssueEvent(
                event=webhooks.ISSUE_UPDATED,
                site_id=site.cloud_id,
                issue_key=key,
                actor_id=actor.account_id,
                at=self.now(),
                type_name=type_name,
                changelog_id=self._changelog_seq,
                items=tuple(items),
            )
            self._dispatch(event, origin)
            return changed

    def add_comment(self, *, key: str, body: Any, actor_id: str | None, origin: str) -> Comment:
        """A comment by the actor: fires comment_created and jira:issue_updated (issue_commented)."""
        with self.lock:
            issue, site, actor = self._issue_and_actor(key, actor_id)
            if not isinstance(body, str) or not body.strip():
                raise ValueError("Comment body can not be empty!")
            now = self.now()
            self._comment_seq += 1
            comment = Comment(self._comment_seq, key, actor.account_id, body.strip(), now)
            self.comments.setdefault(key, []).append(comment)
            self._store_issue(issue, dict(issue.fields), assignee_id=issue.assignee_id, status_name=issue.status_name)
            for event, type_name in ((webhooks.COMMENT_CREATED, ""), (webhooks.ISSUE_UPDATED, "issue_commented")):
                self._dispatch(
                    IssueEvent(
                        event=event,
                        site_id=site.cloud_id,
                        issue_key=key,
                        actor_id=actor.account_id,
                        at=now,
                        type_name=type_name,
                        comment=comment,
                    ),
                    origin,
                )
            return comment

    def _find(self, key: str) -> Issue | None:
        project = key.rsplit("-", 1)[0].upper()
        for site in self.sites.values():
            if site.project_key == project:
                return next((i for i in self.issues[site.cloud_id] if i.key == key.upper()), None)
        return None

    def _issue_and_actor(self, key: str, actor_id: str | None) -> tuple[Issue, Site, User]:
        issue = self._find(key)
        if issue is None:
            raise LookupError(f"Issue {key} does not exist.")
        site = self.sites[issue.site_id]
        actor = self.accounts.get(actor_id or ADA)
        if actor is None or site.cloud_id not in actor.site_ids:
            raise ValueError(f"actor must be an account with access to {site.name}.")
        return issue, site, actor

    def _store_issue(self, issue: Issue, fields: dict[str, Any], *, assignee_id: str | None, status_name: str) -> Issue:
        now = self.now()
        fields["updated"] = jira_datetime(now)
        changed = dataclasses.replace(
            issue,
            assignee_id=assignee_id,
            status_name=status_name,
            status_category=fields["status"]["statusCategory"]["key"],
            updated=now,
            fields=fields,
        )
        issues = self.issues[issue.site_id]
        # Replaced, not mutated: a search reading the list sees the old issue or the new one.
        issues[issues.index(issue)] = changed
        return changed

    def _dispatch(self, event: IssueEvent, origin: str) -> None:
        issue = self._find(event.issue_key)
        if issue is None:
            return
        site = self.sites[event.site_id]
        matched = [
            w
            for w in self._live_webhooks(self.now())
            if w.site_id == event.site_id
            and w.wants(event.event, event.changed_fields)
            and w.filter.matches(issue, w.account_id)
        ]
        # One delivery per app and URL, naming every webhook of it that matched.
        groups: dict[tuple[str, str], list[int]] = {}
        for hook in sorted(matched, key=lambda w: w.id):
            groups.setdefault((hook.client_id, hook.url), []).append(hook.id)
        for (client_id, url), ids in groups.items():
            self.deliveries.enqueue(
                url=url,
                client_id=client_id,
                event=event.event,
                issue_key=issue.key,
                webhook_ids=ids,
                payload=webhooks.event_payload(event, site, issue, self.accounts, origin, ids),
            )

    # ---- internals (lock held) ---------------------------------------------------------
    def _dead_answer(self) -> TokenAnswer:
        return DEAD_GRANT_UNAUTHORIZED_CLIENT if self.config.unauthorized_client_style else DEAD_GRANT

    def _grant_alive(self, grant: Grant, now: float) -> bool:
        return grant.revoked_at is None and now < grant.created_at + self.config.grant_max_age

    def _event(self, now: float, grant: Grant, outcome: str) -> None:
        self.refresh_events.append(RefreshEvent(now, grant.account_id, grant.grant_id, outcome))

    def _revoke(self, grant: Grant, reason: str) -> None:
        grant.revoked_at = self.now()
        grant.revoked_reason = reason
        if reason != "replaced":
            self.counters["grants_revoked"] += 1

    def _create_grant(self, account_id: str, scopes: tuple[str, ...], now: float) -> Grant:
        # One grant per account per app: a new consent replaces the old grant and its tokens,
        # and restarts the 365-day clock (reconnecting is how users get past it).
        old_id = self.grant_by_account.get(account_id)
        old = self.grants.get(old_id) if old_id else None
        if old is not None and old.revoked_at is None:
            self._revoke(old, "replaced")
            self.counters["grants_replaced"] += 1
        user = self.accounts[account_id]
        grant = Grant(
            grant_id=secrets.token_hex(8),
            account_id=account_id,
            scopes=scopes,
            site_ids=user.site_ids,
            created_at=now,
        )
        self.grants[grant.grant_id] = grant
        self.grant_by_account[account_id] = grant.grant_id
        return grant

    def _issue_tokens(self, grant: Grant, now: float) -> dict[str, Any]:
        ttl = self.config.access_ttl
        access = new_access_token()
        self.access_tokens[access] = AccessToken(grant.grant_id, now, now + ttl)
        grant.access_tokens.append(access)
        self.issued_access_tokens.append(access)
        answer: dict[str, Any] = {"access_token": access, "expires_in": ttl, "scope": " ".join(grant.scopes)}
        if "offline_access" in grant.scopes:
            refresh = new_refresh_token()
            self.refresh_tokens[refresh] = RefreshToken(grant.grant_id, now)
            grant.refresh_tokens.append(refresh)
            self.issued_refresh_tokens.append(refresh)
            answer["refresh_token"] = refresh
        answer["token_type"] = "Bearer"
        return answer
