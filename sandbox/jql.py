"""A tiny, tolerant JQL subset: enough for a portal's "my open issues" queries.

Understood (case-insensitive, clauses joined by top-level AND):
  assignee = currentUser() | assignee != … | assignee in (…) | assignee is [not] EMPTY
  statusCategory = / != / in / not in  (Done, "To Do", "In Progress", new, indeterminate, done, 2, 3, 4)
  status = / != / in / not in  (status names)
  project = / != / in / not in  (key or name)
  resolution is [not] EMPTY | resolution = Unresolved  (mapped to statusCategory)
  ORDER BY updated | created | key | priority [ASC|DESC], …
Any other clause is ignored (reported back in `Query.ignored`). A where-part containing a
top-level OR is ignored as a whole: applying only part of an OR would narrow it wrongly.
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


def _split_top(text: str, word: str) -> list[str]:
    """Split on a keyword outside quotes and parentheses."""
    parts: list[str] = []
    depth = 0
    quote = ""
    start = 0
    i = 0
    lower = text.lower()
    n = len(word)
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
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif (
            depth == 0
            and lower.startswith(word, i)
            and (i == 0 or not text[i - 1].isalnum())
            and (i + n == len(text) or not text[i + n].isalnum())
        ):
            parts.append(text[start:i])
            start = i + n
            i += n
            continue
        i += 1
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
    r"^(?P<field>[a-z]+)\s*(?P<op>!=|=|\bnot\s+in\b|\bin\b|\bis\s+not\b|\bis\b)\s*(?P<value>.+)$",
    re.IGNORECASE | re.DOTALL,
)


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
    if op in ("is", "is not"):
        if raw.lower() not in ("empty", "null"):
            return None
        want_empty = op == "is"
        if name == "assignee":
            return lambda issue, _me: (issue.assignee_id is None) == want_empty
        if name == "resolution":
            return lambda issue, _me: (issue.status_category != "done") == want_empty
        return None
    negated, values = _membership(op, raw)
    lowered = [v.lower() for v in values]
    if name == "assignee":

        def assignee(issue: Issue, me: str) -> bool:
            wanted = {me if v == "currentuser()" else v for v in lowered}
            hit = (issue.assignee_id or "").lower() in wanted
            return hit != negated

        return assignee
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
