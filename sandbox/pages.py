"""HTML of the consent and error pages, and the avatar SVGs. Every interpolated value goes
through html.escape."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from html import escape

from sandbox.seed import KNOWN_SCOPES, Issue, Site, User

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; color: #172b4d; }
.banner { background: #fffae6; border: 1px solid #ffc400; padding: .5rem .75rem; border-radius: 4px; }
fieldset { border: 1px solid #dfe1e6; border-radius: 4px; margin: 1rem 0; }
label { display: block; margin: .5rem 0; }
.sites { color: #5e6c84; font-size: .9em; }
button { font-size: 1rem; padding: .5rem 1.25rem; margin-right: .5rem; }
#accept { background: #0052cc; color: white; border: none; border-radius: 3px; }
body:has(main.wide) { max-width: 72rem; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #dfe1e6; padding: .25rem .5rem; text-align: left; }
td button { font-size: .9rem; padding: .2rem .6rem; }
"""


def _page(title: str, body: str, *, wide: bool = False) -> str:
    main = '<main class="wide">' if wide else "<main>"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body>{main}\n{body}\n</main></body></html>\n"
    )


def _dom_id(account_id: str) -> str:
    return "account-" + "".join(ch if ch.isalnum() else "-" for ch in account_id)


def consent_page(
    *,
    app_name: str,
    scopes: Iterable[str],
    users: Iterable[User],
    sites: Mapping[str, Site],
    params: Mapping[str, str],
) -> str:
    scope_items = "\n".join(
        f'<li data-scope="{escape(s)}"><code>{escape(s)}</code> &ndash; {escape(KNOWN_SCOPES.get(s, ""))}</li>'
        for s in scopes
    )
    hidden = "\n".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in params.items())
    choices = []
    for index, user in enumerate(users):
        site_names = ", ".join(sites[s].name for s in user.site_ids)
        dom_id = _dom_id(user.account_id)
        checked = " checked" if index == 0 else ""
        choices.append(
            f'<label for="{dom_id}"><input type="radio" name="account_id" id="{dom_id}" '
            f'value="{escape(user.account_id)}"{checked}> <strong>{escape(user.name)}</strong> '
            f'({escape(user.email)}) <span class="sites">sites: {escape(site_names)}</span></label>'
        )
    body = f"""
<p class="banner">Atlassian sandbox: a local stand-in for auth.atlassian.com. No real account is used.</p>
<h1 id="consent-title">{escape(app_name)} is requesting access to your Atlassian account</h1>
<h2>It wants to</h2>
<ul id="scopes">
{scope_items}
</ul>
<form method="post" action="/authorize" id="consent-form">
{hidden}
<fieldset id="accounts"><legend>Sign in as</legend>
{chr(10).join(choices)}
</fieldset>
<button type="submit" name="decision" value="accept" id="accept">Accept</button>
<button type="submit" name="decision" value="decline" id="decline">Decline</button>
</form>
"""
    return _page(f"Authorize {app_name} - Atlassian sandbox", body)


def error_page(message: str) -> str:
    body = f"""
<p class="banner">Atlassian sandbox: a local stand-in for auth.atlassian.com.</p>
<h1 id="error-title">Something went wrong</h1>
<p id="error-message">{escape(message)}</p>
<p>The app's request was refused by the authorization server; you were not sent back to the app.</p>
"""
    return _page("Error - Atlassian sandbox", body)


def avatar_svg(user: User) -> str:
    """A coloured circle with the user's initials; the hue follows from the avatar's name."""
    hue = int.from_bytes(hashlib.sha256(user.avatar.encode()).digest()[:2]) % 360
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="48" height="48" viewBox="0 0 48 48">'
        f'<circle cx="24" cy="24" r="24" fill="hsl({hue}, 55%, 42%)"/>'
        '<text x="24" y="24" dy=".35em" text-anchor="middle" fill="#fff" '
        f'font-family="system-ui, sans-serif" font-size="19" font-weight="600">{escape(user.initials)}</text>'
        "</svg>\n"
    )


def _options(choices: Iterable[tuple[str, str]], selected: str) -> str:
    return "".join(
        f'<option value="{escape(value)}"{" selected" if value == selected else ""}>{escape(label)}</option>'
        for value, label in choices
    )


def issues_page(
    *,
    site: Site,
    sites: Iterable[Site],
    issues: Iterable[Issue],
    users: Iterable[User],
    statuses: Iterable[str],
    comment_counts: Mapping[str, int],
) -> str:
    """/_sandbox/issues: change an issue or comment on it, so webhook deliveries fire.

    Plain forms, no script: the page must work under any Content-Security-Policy.
    """
    people = [u for u in users if site.cloud_id in u.site_ids]
    actors = _options(((u.account_id, u.name) for u in people), people[0].account_id if people else "")
    assignees = [("", "Unassigned"), *((u.account_id, u.name) for u in people)]
    status_choices = [(n, n) for n in statuses]
    tabs = " | ".join(
        f"<strong>{escape(s.name)}</strong>"
        if s.cloud_id == site.cloud_id
        else f'<a href="/_sandbox/issues?site={escape(s.name)}">{escape(s.name)}</a>'
        for s in sites
    )
    rows = []
    for issue in issues:
        key = escape(issue.key)
        rows.append(
            f"""<tr id="{key}"><th scope="row">{key}</th><td>
<form method="post" action="/_sandbox/issues/{key}" class="change">
<input name="summary" value="{escape(issue.fields["summary"])}" aria-label="Summary of {key}" size="28" required>
<select name="status" aria-label="Status of {key}">{_options(status_choices, issue.status_name)}</select>
<select name="assignee" aria-label="Assignee of {key}">{_options(assignees, issue.assignee_id or "")}</select>
<select name="actor" aria-label="Changed by">{actors}</select>
<button type="submit">Save</button></form></td><td>
<form method="post" action="/_sandbox/issues/{key}/comments" class="comment">
<input name="body" aria-label="Comment on {key}" placeholder="Comment" size="18" required>
<select name="actor" aria-label="Comment by">{actors}</select>
<button type="submit">Comment</button> <span class="count">{comment_counts.get(issue.key, 0)}</span></form>
</td></tr>"""
        )
    body = f"""
<p class="banner">Atlassian sandbox: change an issue here and every matching dynamic webhook gets a delivery.</p>
<h1 id="issues-title">Issues on {escape(site.name)}</h1>
<p id="sites">Sites: {tabs} &middot; <a href="/_sandbox/deliveries">deliveries (JSON)</a></p>
<table id="issues"><thead><tr><th>Key</th><th>Summary, status, assignee</th><th>Comments</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
"""
    return _page(f"Issues on {site.name} - Atlassian sandbox", body, wide=True)
