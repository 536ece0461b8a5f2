"""A tiny, tolerant JQL subset: enough for a portal's "my open issues" queries, and the
stricter subset Jira accepts in a dynamic webhook's `jqlFilter`.

Search (`parse`; case-insensitive, clauses joined by top-level AND):
  assignee | reporter = currentUser() / != … / in (…) / not in (…) / is [not] EMPTY  (account ids)
  statusCategory = / != / in / not in  (Done, "To Do", "In Progress", new, indeterminate, done, 2, 3, 4)
  status = / != / in / not in  (status names)
  project = / != / in / not in  (key or name)
  issueKey (key), issuetype (type) = / != / in / not in
  resolution is [not] EMPTY | resolution = Unresolved  (mapped to statusCategory)
  ORDER BY updated | created | key | priority [ASC|DESC], …
Any other well-formed clause is ignored (reported back in `Query.ignored`). A where-part
containing a top-level OR is ignored as a whole: applying only part of an OR would narrow it
wrongly. A malformed query (unbalanced quotes or parentheses, a clause without an operator)
is an error, as in Jira.

Webhook filters (`webhook_filter`): Jira's documented subset, with AND, OR and parentheses:
fields issueKey, project, issuetype, status, assignee, reporter, issue.property[…], cf[id];
operators =, !=, IN, NOT IN. Anything else is refused with Jira's kind of message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from sandbox.seed import Issue

Predicate = Callable[[Issue, str], bool]

_CATEGORY_ALIASES = {
    "done": "done",
    "3": "done",
    "to do": "new",
    "new": "new",
    "2": "new",
    "in progress": "indeterminate",
    "indeterminate": "indeterminate",
    "4": "indeterminate",
}


@dataclass
class Query:
    predicates: list[Predicate] = field(default_factory=list)
    order: list[tuple[str, bool]] = field(default_factory=list)  # (field, descending)
    ignored: list[str] = field(default_factory=list)
    bounded: bool = False
    # Jira's "Error in the JQL Query" message when the query does not parse.
    error: str | None = None

    def apply(self, issues: list[Issue], account_id: str) -> list[Issue]:
        selected = [i for i in issues if all(p(i, account_id) for p in self.predicates)]
        # Stable sorts from the last key to the first; the issue id is the final tie-breaker.
        selected.sort(key=lambda i: i.id)
        for name, descending in reversed(self.order):
            selected.sort(key=_SORT_KEYS[name], reverse=descending)
        return selected


_SORT_KEYS: dict[str, Callable[[Issue], float]] = {
    "updated": lambda i: i.updated,
    "created": lambda i: i.created,
    "key": lambda i: float(i.id),
    "id": lambda i: float(i.id),
    "priority": lambda i: float(-i.priority_rank),
}


def _scan(text: str) -> tuple[list[tuple[int, int]], int, bool]:
    """Every character outside quotes as (index, parenthesis depth before it), the depth at
    the end, and whether a quote is left open there."""
    positions: list[tuple[int, int]] = []
    depth = 0
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        else:
            positions.append((i, depth))
            depth += (ch == "(") - (ch == ")")
        i += 1
    return positions, depth, bool(quote)


def _split_top(text: str, word: str) -> list[str]:
    """Split on a keyword (or a separator such as ",") outside quotes and parentheses."""
    parts: list[str] = []
    start = 0
    lower = text.lower()
    n = len(word)
    # Only a word needs word boundaries: "in" must not split "assignee in (…)"'s "Done,In".
    bounded = word.isalnum()
    for i, depth in _scan(text)[0]:
        if (
            i >= start
            and depth == 0
            and lower.startswith(word, i)
            and not (bounded and i > 0 and text[i - 1].isalnum())
            and not (bounded and i + n < len(text) and text[i + n].isalnum())
        ):
            parts.append(text[start:i])
            start = i + n
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _values(raw: str) -> list[str]:
    return [_unquote(v) for v in _split_top(raw, ",") if v.strip()]


def _strip_parens(clause: str) -> str:
    while clause.startswith("(") and clause.endswith(")") and _balanced(clause[1:-1]):
        clause = clause[1:-1].strip()
    return clause


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            return False
    return depth == 0


_CLAUSE = re.compile(
    r"^(?P<field>[a-z][\w.]*(?:\[[^\]]*\][\w.]*)?)\s*"
    r"(?P<op>!=|=|\bnot\s+in\b|\bin\b|\bis\s+not\b|\bis\b|~|!~|>=|<=|>|<|\bwas\b|\bchanged\b)\s*"
    r"(?P<value>.+)$",
    re.IGNORECASE | re.DOTALL,
)
_EMPTY_WORDS = ("empty", "null")
# Fields every issue has a value for: `is EMPTY` never matches them.
_ALWAYS_SET = {"project", "status", "statuscategory", "issuekey", "key", "issuetype", "type", "reporter"}


def _syntax_error(text: str) -> str | None:
    """Jira's message for a query that does not parse, or None."""
    positions, depth, open_quote = _scan(text)
    if any(before == 0 and text[i] == ")" for i, before in positions):
        return "Error in the JQL Query: Expecting either 'OR' or 'AND' but got ')'."
    if open_quote:
        return "Error in the JQL Query: The quoted string has not been completed."
    if depth:
        return "Error in the JQL Query: Expecting ')' before the end of the query."
    return None


def _account_predicate(negated: bool, lowered: list[str], account: Callable[[Issue], str | None]) -> Predicate:
    def predicate(issue: Issue, me: str) -> bool:
        wanted = {me.lower() if v == "currentuser()" else v for v in lowered}
        hit = (account(issue) or "").lower() in wanted
        return hit != negated

    return predicate


def _reporter_id(issue: Issue) -> str | None:
    reporter = issue.fields.get("reporter")
    return str(reporter["accountId"]) if reporter else None


def _membership(op: str, raw: str) -> tuple[bool, list[str]]:
    """Return (negated, values) for =, !=, in, not in."""
    op = " ".join(op.lower().split())
    if op in ("in", "not in"):
        inner = raw.strip()
        if inner.startswith("(") and inner.endswith(")"):
            inner = inner[1:-1]
        return op == "not in", _values(inner)
    return op == "!=", [_unquote(raw)]


def _clause_predicate(clause: str) -> Predicate | None:
    match = _CLAUSE.match(clause)
    if not match:
        return None
    name = match["field"].lower()
    op = " ".join(match["op"].lower().split())
    raw = match["value"].strip()
    if op in ("=", "!=") and raw.lower() in _EMPTY_WORDS:
        # `field = null` is JQL's other spelling of `field is EMPTY`.
        op = "is" if op == "=" else "is not"
    if op in ("is", "is not"):
        if raw.lower() not in _EMPTY_WORDS:
            return None
        want_empty = op == "is"
        if name == "assignee":
            return lambda issue, _me: (issue.assignee_id is None) == want_empty
        if name == "resolution":
            return lambda issue, _me: (issue.status_category != "done") == want_empty
        if name in _ALWAYS_SET:
            return lambda issue, _me: not want_empty
        return None
    if op not in ("=", "!=", "in", "not in"):
        return None
    negated, values = _membership(op, raw)
    lowered = [v.lower() for v in values]
    if name == "assignee":
        return _account_predicate(negated, lowered, lambda issue: issue.assignee_id)
    if name == "reporter":
        return _account_predicate(negated, lowered, _reporter_id)
    if name in ("issuekey", "key"):
        return lambda issue, _me: (issue.key.lower() in lowered) != negated
    if name in ("issuetype", "type"):
        return lambda issue, _me: (
            (issue.fields["issuetype"]["name"].lower() in lowered or issue.fields["issuetype"]["id"] in lowered)
            != negated
        )
    if name == "statuscategory":
        categories = {_CATEGORY_ALIASES.get(v, v) for v in lowered}
        return lambda issue, _me: (issue.status_category in categories) != negated
    if name == "status":
        return lambda issue, _me: (issue.status_name.lower() in lowered) != negated
    if name == "project":
        return lambda issue, _me: (
            (issue.key.split("-")[0].lower() in lowered or issue.fields["project"]["name"].lower() in lowered)
            != negated
        )
    if name == "resolution" and lowered == ["unresolved"]:
        return lambda issue, _me: (issue.status_category != "done") != negated
    return None


def parse(jql: str) -> Query:
    query = Query()
    text = jql.strip()
    query.error = _syntax_error(text)
    if query.error:
        return query
    order_match = re.search(r"\border\s+by\b", text, re.IGNORECASE)
    where = text[: order_match.start()] if order_match else text
    order_part = text[order_match.end() :] if order_match else ""
    where = where.strip()
    if where:
        query.bounded = True
        if len(_split_top(where, "or")) > 1:
            query.ignored.append(where)
        else:
            for clause in _split_top(where, "and"):
                clause = _strip_parens(clause)
                if not _CLAUSE.match(clause) and "(" not in clause:
                    query.error = "Error in the JQL Query: Expecting operator but got the end of the query."
                    return query
                predicate = _clause_predicate(clause)
                if predicate is None:
                    query.ignored.append(clause)
                else:
                    query.predicates.append(predicate)
    for item in _split_top(order_part, ","):
        if not item:
            continue
        words = item.split()
        name = words[0].lower()
        if name not in _SORT_KEYS or len(words) > 2:
            query.ignored.append(f"ORDER BY {item}")
            continue
        descending = len(words) == 2 and words[1].lower() == "desc"
        query.order.append((name, descending))
    return query


# ---- dynamic webhook filters ----------------------------------------------------------
WEBHOOK_FIELDS = ("issuekey", "key", "project", "issuetype", "type", "status", "assignee", "reporter")
WEBHOOK_OPERATORS = ("=", "!=", "in", "not in")
_PROPERTY_FIELD = re.compile(r"^(?:issue\.property\[[^\]]+\](?:\.[\w.]+)?|cf\[\d+\])$", re.IGNORECASE)


@dataclass(frozen=True)
class WebhookFilter:
    """A webhook's jqlFilter: `errors` (Jira's messages) when refused, else `matches`."""

    errors: tuple[str, ...]
    predicate: Predicate | None = None

    def matches(self, issue: Issue, account_id: str) -> bool:
        return self.predicate is not None and self.predicate(issue, account_id)


def _never(issue: Issue, me: str) -> bool:
    return False


def _webhook_clause(clause: str, errors: list[str]) -> Predicate:
    match = _CLAUSE.match(clause)
    if not match:
        errors.append(f"The clause {clause} is unsupported")
        return _never
    name = match["field"]
    op = " ".join(match["op"].lower().split())
    if name.lower() not in WEBHOOK_FIELDS and not _PROPERTY_FIELD.match(name):
        errors.append(f"The clause {name} is unsupported")
        return _never
    if op not in WEBHOOK_OPERATORS:
        errors.append(f"Operator {op} is unsupported")
        return _never
    if _PROPERTY_FIELD.match(name):
        # Sandbox issues carry no properties or custom fields, and JQL never matches an
        # absent value, whatever the operator.
        return _never
    return _clause_predicate(clause) or _never


def _webhook_expression(text: str, errors: list[str]) -> Predicate:
    alternatives = _split_top(text, "or")
    if len(alternatives) > 1:
        anys = [_webhook_expression(a, errors) for a in alternatives]
        return lambda issue, me: any(p(issue, me) for p in anys)
    conjuncts = _split_top(text, "and")
    if len(conjuncts) > 1:
        alls = [_webhook_expression(c, errors) for c in conjuncts]
        return lambda issue, me: all(p(issue, me) for p in alls)
    inner = _strip_parens(text)
    if inner != text:
        return _webhook_expression(inner, errors)
    if not text:
        errors.append("Error in the JQL Query: Expecting a clause but got the end of the query.")
        return _never
    return _webhook_clause(text, errors)


def webhook_filter(jql: str) -> WebhookFilter:
    text = jql.strip()
    if not text:
        return WebhookFilter(("The JQL filter must not be empty.",))
    problem = _syntax_error(text)
    if problem:
        return WebhookFilter((problem,))
    if re.search(r"\border\s+by\b", text, re.IGNORECASE):
        return WebhookFilter(("The clause ORDER BY is unsupported",))
    errors: list[str] = []
    predicate = _webhook_expression(text, errors)
    if errors:
        return WebhookFilter(tuple(dict.fromkeys(errors)))
    return WebhookFilter((), predicate)
