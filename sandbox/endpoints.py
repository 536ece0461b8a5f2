"""The Atlassian endpoints and the /_sandbox/ controls, as functions of (State, Request)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from sandbox import jql, pages, webhooks
from sandbox.messages import Request, Response, html_response, json_response, redirect
from sandbox.seed import API_BASE, KNOWN_SCOPES, STATUS_NAMES, Issue, Site, User
from sandbox.state import Grant, State

UNAUTHORIZED = {"code": 401, "message": "Unauthorized"}
SCOPE_MISMATCH = {"code": 401, "message": "Unauthorized; scope does not match"}
SITE_NOT_FOUND = {"errorMessages": ["Site not found"]}
NOT_FOUND = {"errorMessages": ["Not found"]}
LEGACY_SEARCH_GONE = {
    "errorMessages": [
        "The requested API has been removed. Please migrate to the /rest/api/3/search/jql API. "
        "A full migration guideline is available at https://developer.atlassian.com/changelog/#CHANGE-2046"
    ],
    "errors": {},
}
UNBOUNDED_JQL = {
    "errorMessages": ["Unbounded JQL queries are not allowed here. Please add a search restriction to your query."],
    "errors": {},
}
INVALID_PAYLOAD = "Invalid request payload. Refer to the REST API documentation and try again."
WEBHOOK_SCOPES = ("read:jira-work", "manage:jira-webhook")
NO_STORE = [("Cache-Control", "no-store"), ("Pragma", "no-cache")]
DECLINE_DESCRIPTION = "User did not authorize the request"
# Scopes that belong to the identity platform, not to a Jira site's resource entry.
_NON_SITE_SCOPES = {"offline_access", "read:me", "read:account"}

Handler = Callable[[State, Request], Response]


def jira_error(status: int, message: str) -> Response:
    return json_response(status, {"errorMessages": [message], "errors": {}})


def _form(body: bytes) -> dict[str, str]:
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


def _json_object(body: bytes) -> dict[str, Any] | None:
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


# ---- /authorize ----------------------------------------------------------------------
_AUTHORIZE_PARAMS = ("audience", "client_id", "scope", "redirect_uri", "state", "response_type", "prompt")


def _authorize_problem(state: State, params: dict[str, str]) -> str | None:
    """None when the request is acceptable; otherwise the sandbox error page's message.

    Every problem gets the error page, never a redirect: before client_id and redirect_uri
    are known to be good, redirecting would make the sandbox an open redirector, and
    Atlassian shows its own page for the others too.
    """
    config = state.config
    if not secrets.compare_digest(params.get("client_id", "").encode(), config.client_id.encode()):
        return "Invalid client_id: no app is registered with this client id."
    if params.get("redirect_uri", "") != config.redirect_uri:
        return "Invalid redirect_uri: it does not match the callback URL registered for this app."
    if params.get("response_type") != "code":
        return "Invalid response_type: it must be 'code'."
    if params.get("audience") != "api.atlassian.com":
        return "Invalid audience: it must be 'api.atlassian.com'."
    # Atlassian documents prompt=consent but not what it does when prompt is absent:
    # absent is accepted rather than refused on a guess (see sandbox/README.md).
    if params.get("prompt", "consent") != "consent":
        return "Invalid prompt: only 'consent' is supported."
    scopes = params.get("scope", "").split()
    if not scopes:
        return "Missing scope."
    unknown = [s for s in scopes if s not in KNOWN_SCOPES]
    if unknown:
        return f"Invalid scope: {' '.join(unknown)} is not configured for this app."
    return None


def _scopes(raw: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(raw.split()))


def authorize_get(state: State, request: Request) -> Response:
    params = {k: v[0] for k, v in request.query.items() if k in _AUTHORIZE_PARAMS}
    problem = _authorize_problem(state, params)
    if problem:
        return html_response(400, pages.error_page(problem))
    page = pages.consent_page(
        app_name=state.config.app_name,
        scopes=_scopes(params["scope"]),
        users=state.seed_users.values(),
        sites=state.sites,
        params=params,
    )
    return html_response(200, page, [("Cache-Control", "no-store")])


def authorize_post(state: State, request: Request) -> Response:
    form = _form(request.body)
    params = {k: v for k, v in form.items() if k in _AUTHORIZE_PARAMS}
    problem = _authorize_problem(state, params)
    if problem:
        return html_response(400, pages.error_page(problem))
    redirect_uri = params["redirect_uri"]
    decision = form.get("decision")
    if decision == "accept":
        account_id = form.get("account_id", "")
        if account_id not in state.seed_users:
            return html_response(400, pages.error_page("Choose an account to continue."))
        code = state.create_code(
            client_id=params["client_id"],
            redirect_uri=redirect_uri,
            account_id=account_id,
            scopes=_scopes(params["scope"]),
        )
        answer = {"code": code}
    elif decision == "decline":
        answer = {"error": "access_denied", "error_description": DECLINE_DESCRIPTION}
    else:
        return html_response(400, pages.error_page("Choose Accept or Decline."))
    if "state" in params:
        answer["state"] = params["state"]
    separator = "&" if urlsplit(redirect_uri).query else "?"
    return redirect(redirect_uri + separator + urlencode(answer, quote_via=quote))


# ---- /oauth/token --------------------------------------------------------------------
def _token_params(request: Request) -> dict[str, Any] | None:
    content_type = (request.headers.get("Content-Type") or "").lower()
    if "application/x-www-form-urlencoded" in content_type:
        return dict(_form(request.body))
    data = _json_object(request.body)
    if data is None and "json" not in content_type:
        return dict(_form(request.body))
    return data


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization") or ""
    if not header.lower().startswith("basic "):
        return None
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, _, password = raw.partition(":")
    return user, password


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def token(state: State, request: Request) -> Response:
    params = _token_params(request)
    if params is None:
        return json_response(
            400, {"error": "invalid_request", "error_description": "Request body is not valid JSON"}, NO_STORE
        )
    client_id, client_secret = _text(params.get("client_id")), _text(params.get("client_secret"))
    basic = _basic_credentials(request)
    if basic and not client_id and not client_secret:
        client_id, client_secret = basic
    config = state.config
    good_id = secrets.compare_digest(client_id.encode(), config.client_id.encode())
    good_secret = secrets.compare_digest(client_secret.encode(), config.client_secret.encode())
    if not (good_id and good_secret):
        return json_response(401, {"error": "access_denied", "error_description": "Unauthorized"}, NO_STORE)
    grant_type = _text(params.get("grant_type"))
    if grant_type == "authorization_code":
        status, body = state.exchange_code(
            code=_text(params.get("code")),
            redirect_uri=_text(params.get("redirect_uri")),
            client_id=client_id,
        )
    elif grant_type == "refresh_token":
        refresh_token = _text(params.get("refresh_token"))
        if not refresh_token:
            status, body = 400, {"error": "invalid_request", "error_description": "refresh_token is required"}
        else:
            status, body = state.refresh(refresh_token)
    else:
        status, body = (
            400,
            {
                "error": "unsupported_grant_type",
                "error_description": "grant_type must be authorization_code or refresh_token",
            },
        )
    return json_response(status, body, NO_STORE)


# ---- bearer-token APIs ---------------------------------------------------------------
def _bearer(state: State, request: Request) -> tuple[Grant, User] | None:
    header = request.headers.get("Authorization") or ""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return state.authenticate(value.strip())


def accessible_resources(state: State, request: Request) -> Response:
    auth = _bearer(state, request)
    if auth is None:
        return json_response(401, UNAUTHORIZED)
    grant, _user = auth
    site_scopes = [s for s in grant.scopes if s not in _NON_SITE_SCOPES]
    resources = [
        {
            "id": site.cloud_id,
            "name": site.name,
            "url": site.url,
            "scopes": site_scopes,
            "avatarUrl": site.avatar_url,
        }
        for site in (state.sites[s] for s in grant.site_ids)
    ]
    return json_response(200, resources)


def me(state: State, request: Request) -> Response:
    auth = _bearer(state, request)
    if auth is None:
        return json_response(401, UNAUTHORIZED)
    grant, user = auth
    if "read:me" not in grant.scopes:
        return json_response(401, SCOPE_MISMATCH)
    return json_response(200, user.me_json(request.origin))


def _jira_access(state: State, request: Request, cloud_id: str, *scopes: str) -> tuple[Grant, User, Site] | Response:
    """Gateway checks in the gateway's order: token, scopes (all of them), then the site.

    A cloud id that is unknown, or not in this grant, answers 404 "Site not found" (the
    sandbox's documented choice; the real gateway has been seen answering 401 as well).
    """
    auth = _bearer(state, request)
    if auth is None:
        return json_response(401, UNAUTHORIZED)
    grant, user = auth
    if not set(scopes) <= set(grant.scopes):
        return json_response(401, SCOPE_MISMATCH)
    site = state.sites.get(cloud_id)
    if site is None or cloud_id not in grant.site_ids:
        return json_response(404, SITE_NOT_FOUND)
    return grant, user, site


def jira_myself(state: State, request: Request, cloud_id: str) -> Response:
    access = _jira_access(state, request, cloud_id, "read:jira-user")
    if isinstance(access, Response):
        return access
    _grant, user, site = access
    return json_response(200, user.jira_user_json(site, request.origin))


def jira_search_legacy(state: State, request: Request, cloud_id: str) -> Response:
    if _bearer(state, request) is None:
        return json_response(401, UNAUTHORIZED)
    return json_response(410, LEGACY_SEARCH_GONE)


def _page_token(offset: int, fingerprint: str) -> str:
    raw = json.dumps({"o": offset, "q": fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _page_offset(token: str, fingerprint: str) -> int | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("q") != fingerprint:
        return None
    offset = data.get("o")
    return offset if isinstance(offset, int) and offset >= 0 else None


def _field_list(raw: Any) -> list[str] | None:
    if raw is None:
        return None
    items: list[str] = []
    for chunk in raw if isinstance(raw, list) else [raw]:
        if isinstance(chunk, str):
            items.extend(part.strip() for part in chunk.split(","))
    names = [i for i in items if i]
    return names or None


def _render_issue(state: State, issue: Issue, fields: list[str] | None, origin: str) -> dict[str, Any]:
    if fields is None:
        return {"id": str(issue.id)}
    wanted = {f for f in fields if not f.startswith("-")}
    excluded = {f[1:] for f in fields if f.startswith("-")}
    if wanted & {"*all", "*navigable"}:
        selected = {k: v for k, v in issue.fields.items() if k not in excluded}
    else:
        selected = {k: v for k, v in issue.fields.items() if k in wanted and k not in excluded}
    site = state.sites[issue.site_id]
    for role in ("assignee", "reporter"):
        person = selected.get(role)
        if person:
            selected[role] = state.accounts[person["accountId"]].jira_user_json(site, origin)
    return {
        "id": str(issue.id),
        "key": issue.key,
        "self": f"{API_BASE}/ex/jira/{issue.site_id}/rest/api/3/issue/{issue.id}",
        "fields": selected,
    }


def jira_search(state: State, request: Request, cloud_id: str) -> Response:
    access = _jira_access(state, request, cloud_id, "read:jira-work")
    if isinstance(access, Response):
        return access
    _grant, user, site = access
    if request.method == "POST":
        body = _json_object(request.body)
        if body is None:
            return jira_error(400, INVALID_PAYLOAD)
        jql_text, fields_raw = body.get("jql"), body.get("fields")
        max_raw, page_token = body.get("maxResults"), body.get("nextPageToken")
    else:
        jql_text, fields_raw = request.first("jql"), request.query.get("fields")
        max_raw, page_token = request.first("maxResults"), request.first("nextPageToken")
    if jql_text is not None and not isinstance(jql_text, str):
        return jira_error(400, "jql must be a string.")
    try:
        max_results = 50 if max_raw is None else int(max_raw)
    except (TypeError, ValueError):
        return jira_error(400, "maxResults must be an integer.")
    if max_results < 0:
        return jira_error(400, "maxResults must not be negative.")
    # Jira clamps silently rather than rejecting a large page size.
    max_results = min(max(max_results, 1), 100)
    query = jql.parse(jql_text or "")
    if query.error:
        return jira_error(400, query.error)
    if not query.bounded:
        return json_response(400, UNBOUNDED_JQL)
    fingerprint = hashlib.sha256(f"{cloud_id}\n{jql_text}".encode()).hexdigest()[:16]
    offset = 0
    if page_token not in (None, ""):
        parsed = _page_offset(page_token, fingerprint) if isinstance(page_token, str) else None
        if parsed is None:
            return jira_error(400, "The provided next page token is invalid or expired.")
        offset = parsed
    matches = query.apply(state.issues[site.cloud_id], user.account_id)
    fields = _field_list(fields_raw)
    page = matches[offset : offset + max_results]
    is_last = offset + max_results >= len(matches)
    payload: dict[str, Any] = {"issues": [_render_issue(state, i, fields, request.origin) for i in page]}
    if not is_last:
        payload["nextPageToken"] = _page_token(offset + max_results, fingerprint)
    payload["isLast"] = is_last
    headers = []
    if query.ignored:
        # Ascii JSON so that the header stays latin-1 encodable whatever the JQL held.
        headers.append(("X-Sandbox-Jql-Ignored", json.dumps(query.ignored)))
    return json_response(200, payload, headers)


# ---- dynamic webhooks -----------------------------------------------------------------
def _non_negative(raw: str | None, default: int, name: str) -> int | Response:
    try:
        value = default if raw is None else int(raw)
    except ValueError:
        return jira_error(400, f"{name} must be an integer.")
    return value if value >= 0 else jira_error(400, f"{name} must not be negative.")


def jira_webhook(state: State, request: Request, cloud_id: str) -> Response:
    """GET lists, POST registers, DELETE removes: the caller's webhooks on this site."""
    access = _jira_access(state, request, cloud_id, *WEBHOOK_SCOPES)
    if isinstance(access, Response):
        return access
    _grant, user, site = access
    owner = {"account_id": user.account_id, "site_id": site.cloud_id}
    if request.method == "GET":
        start_at = _non_negative(request.first("startAt"), 0, "startAt")
        max_results = _non_negative(request.first("maxResults"), 100, "maxResults")
        if isinstance(start_at, Response):
            return start_at
        if isinstance(max_results, Response):
            return max_results
        max_results = min(max(max_results, 1), 100)
        hooks = state.list_webhooks(**owner)
        values = hooks[start_at : start_at + max_results]
        return json_response(
            200,
            {
                "isLast": start_at + max_results >= len(hooks),
                "maxResults": max_results,
                "startAt": start_at,
                "total": len(hooks),
                "values": values,
            },
        )
    body = _json_object(request.body)
    if body is None:
        return jira_error(400, INVALID_PAYLOAD)
    try:
        if request.method == "POST":
            url, specs = webhooks.parse_registration(body)
            results = state.register_webhooks(url=url, specs=specs, **owner)
            return json_response(200, {"webhookRegistrationResult": results})
        state.delete_webhooks(ids=webhooks.parse_ids(body), **owner)
    except webhooks.RequestError as exc:
        return jira_error(400, str(exc))
    return Response(202)


def jira_webhook_refresh(state: State, request: Request, cloud_id: str) -> Response:
    access = _jira_access(state, request, cloud_id, *WEBHOOK_SCOPES)
    if isinstance(access, Response):
        return access
    _grant, user, site = access
    body = _json_object(request.body)
    if body is None:
        return jira_error(400, INVALID_PAYLOAD)
    try:
        ids = webhooks.parse_ids(body)
    except webhooks.RequestError as exc:
        return jira_error(400, str(exc))
    expires_at = state.refresh_webhooks(account_id=user.account_id, site_id=site.cloud_id, ids=ids)
    return json_response(200, {"expirationDate": webhooks.epoch_ms(expires_at)})


# ---- avatars --------------------------------------------------------------------------
def avatar(state: State, request: Request, name: str) -> Response:
    """The image /me's `picture` points at, so that the portal shows one offline too."""
    user = state.user_with_avatar(name)
    if user is None:
        return json_response(404, NOT_FOUND)
    # Drawn from the account's name alone: the same bytes every time, so cacheable.
    return Response(200, pages.avatar_svg(user).encode(), "image/svg+xml", [("Cache-Control", "public, max-age=86400")])


# ---- /_sandbox/ controls -------------------------------------------------------------
def _control_body(request: Request) -> dict[str, Any] | Response:
    body = _json_object(request.body)
    if body is None:
        return json_response(400, {"error": "body must be a JSON object"})
    return body


def control_counters(state: State, request: Request) -> Response:
    return json_response(200, state.counters_snapshot())


def control_reset(state: State, request: Request) -> Response:
    state.reset()
    return json_response(200, {"reset": True})


def control_config(state: State, request: Request) -> Response:
    if request.method == "POST":
        body = _control_body(request)
        if isinstance(body, Response):
            return body
        try:
            state.update_config(body)
        except ValueError as exc:
            return json_response(400, {"error": str(exc)})
    return json_response(200, state.config.to_json())


def control_faults(state: State, request: Request) -> Response:
    if request.method == "GET":
        with state.lock:
            return json_response(200, state.faults.to_json())
    body = _control_body(request)
    if isinstance(body, Response):
        return body
    try:
        return json_response(200, state.set_faults(body))
    except ValueError as exc:
        return json_response(400, {"error": str(exc)})


def control_revoke(state: State, request: Request) -> Response:
    body = _control_body(request)
    if isinstance(body, Response):
        return body
    account_id = body.get("account_id")
    if not isinstance(account_id, str) or not account_id:
        return json_response(400, {"error": "account_id is required"})
    return json_response(200, {"account_id": account_id, "revoked": state.revoke_account(account_id)})


MAX_BULK = 100_000


def control_grants(state: State, request: Request) -> Response:
    if request.method == "GET":
        return json_response(200, state.grants_snapshot())
    body = _control_body(request)
    if isinstance(body, Response):
        return body
    account_id = body.get("account_id")
    scopes_raw = body.get("scopes", "read:jira-work read:jira-user read:me offline_access")
    count = body.get("count", 1)
    if account_id is not None and (not isinstance(account_id, str) or not account_id):
        return json_response(400, {"error": "account_id must be a non-empty string"})
    if isinstance(scopes_raw, list):
        scopes_raw = " ".join(s for s in scopes_raw if isinstance(s, str))
    if not isinstance(scopes_raw, str) or not scopes_raw.split():
        return json_response(400, {"error": "scopes must be a space-separated string"})
    scopes = tuple(dict.fromkeys(scopes_raw.split()))
    unknown = [s for s in scopes if s not in KNOWN_SCOPES]
    if unknown:
        return json_response(400, {"error": f"unknown scopes: {unknown}"})
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_BULK:
        return json_response(400, {"error": f"count must be an integer from 1 to {MAX_BULK}"})
    return json_response(200, state.mint_grants(account_id, scopes, count))


def control_secrets(state: State, request: Request) -> Response:
    return json_response(200, state.secrets_snapshot(), NO_STORE)


def control_clock(state: State, request: Request) -> Response:
    if request.method == "POST":
        body = _control_body(request)
        if isinstance(body, Response):
            return body
        advance = body.get("advance")
        if isinstance(advance, bool) or not isinstance(advance, int | float) or advance < 0:
            return json_response(400, {"error": "advance must be a non-negative number of seconds"})
        state.advance_clock(float(advance))
    return json_response(200, {"now": state.now(), "offset": state.clock_offset})


def control_refreshes(state: State, request: Request) -> Response:
    return json_response(200, state.refreshes_snapshot())


def control_seed(state: State, request: Request) -> Response:
    users = [
        {**u.me_json(request.origin), "site_ids": list(u.site_ids), "jira_email_visible": u.email_visible_in_jira}
        for u in state.seed_users.values()
    ]
    sites = [
        {
            "id": s.cloud_id,
            "name": s.name,
            "url": s.url,
            "project_key": s.project_key,
            "issues": len(state.issues[s.cloud_id]),
        }
        for s in state.sites.values()
    ]
    return json_response(200, {"users": users, "sites": sites})


def control_webhooks(state: State, request: Request) -> Response:
    return json_response(200, state.webhooks_snapshot())


MAX_SETTLE = 30.0


def control_deliveries(state: State, request: Request) -> Response:
    """Every delivery and its attempts; `?settle=N` first waits up to N s for pending ones."""
    raw = request.first("settle")
    settled = None
    if raw is not None:
        try:
            settle = float(raw)
        except ValueError:
            return json_response(400, {"error": "settle must be a number of seconds"})
        settled = state.deliveries.wait_settled(min(max(settle, 0.0), MAX_SETTLE))
    deliveries = state.deliveries.snapshot(request.first("status"))
    return json_response(200, {"settled": settled, "deliveries": deliveries})


def control_issues_page(state: State, request: Request) -> Response:
    wanted = request.first("site")
    site = next((s for s in state.sites.values() if s.name == wanted), next(iter(state.sites.values())))
    with state.lock:
        issues = list(state.issues[site.cloud_id])
        counts = {key: len(c) for key, c in state.comments.items()}
    page = pages.issues_page(
        site=site,
        sites=state.sites.values(),
        issues=issues,
        users=state.seed_users.values(),
        statuses=STATUS_NAMES,
        comment_counts=counts,
    )
    return html_response(200, page, [("Cache-Control", "no-store")])


def _is_form(request: Request) -> bool:
    return "application/x-www-form-urlencoded" in (request.headers.get("Content-Type") or "").lower()


def _issue_control(
    state: State, request: Request, key: str, apply: Callable[[dict[str, Any], str | None], None]
) -> Response:
    """Runs `apply(fields, actor)` for a form post (back to the page) or JSON (the issue)."""
    form = _is_form(request)
    body: dict[str, Any] | None = dict(_form(request.body)) if form else _json_object(request.body)
    if body is None:
        return json_response(400, {"error": "body must be a JSON object"})
    actor = body.pop("actor", None)
    try:
        apply(body, actor if isinstance(actor, str) and actor else None)
    except LookupError as exc:
        message = str(exc.args[0])
        return html_response(404, pages.error_page(message)) if form else json_response(404, {"error": message})
    except ValueError as exc:
        return html_response(400, pages.error_page(str(exc))) if form else json_response(400, {"error": str(exc)})
    view = state.issue_view(key, request.origin)
    if form and view is not None:
        site = next(s for s in state.sites.values() if view["key"].startswith(f"{s.project_key}-"))
        location = f"/_sandbox/issues?site={site.name}#{view['key']}"
        return Response(303, b"", "text/html; charset=utf-8", [("Location", location)])
    return json_response(200, view)


def control_issue(state: State, request: Request, key: str) -> Response:
    if request.method == "GET":
        view = state.issue_view(key, request.origin)
        return json_response(200, view) if view else json_response(404, {"error": f"Issue {key} does not exist."})

    def change(fields: dict[str, Any], actor: str | None) -> None:
        state.change_issue(key=key, changes=fields, actor_id=actor, origin=request.origin)

    return _issue_control(state, request, key, change)


def control_issue_comments(state: State, request: Request, key: str) -> Response:
    def comment(fields: dict[str, Any], actor: str | None) -> None:
        state.add_comment(key=key, body=fields.get("body"), actor_id=actor, origin=request.origin)

    return _issue_control(state, request, key, comment)


# (path, allowed methods, handler)
CONTROLS: dict[str, tuple[frozenset[str], Handler]] = {
    "/_sandbox/counters": (frozenset({"GET"}), control_counters),
    "/_sandbox/reset": (frozenset({"POST"}), control_reset),
    "/_sandbox/config": (frozenset({"GET", "POST"}), control_config),
    "/_sandbox/faults": (frozenset({"GET", "POST"}), control_faults),
    "/_sandbox/revoke": (frozenset({"POST"}), control_revoke),
    "/_sandbox/grants": (frozenset({"GET", "POST"}), control_grants),
    "/_sandbox/secrets": (frozenset({"GET"}), control_secrets),
    "/_sandbox/clock": (frozenset({"GET", "POST"}), control_clock),
    "/_sandbox/refreshes": (frozenset({"GET"}), control_refreshes),
    "/_sandbox/seed": (frozenset({"GET"}), control_seed),
    "/_sandbox/webhooks": (frozenset({"GET"}), control_webhooks),
    "/_sandbox/deliveries": (frozenset({"GET"}), control_deliveries),
    "/_sandbox/issues": (frozenset({"GET"}), control_issues_page),
}
