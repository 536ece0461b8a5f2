"""Injected latency and failures per endpoint, with a seedable RNG for reproducible runs."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

ENDPOINTS = (
    "authorize",
    "token",
    "accessible_resources",
    "me",
    "myself",
    "search",
    "search_legacy",
    "webhook",
    "webhook_refresh",
)
# Answered instead of processing the request: the server has done nothing.
PRE_KINDS = frozenset({"500", "503", "429", "timeout", "malformed"})
# Processed (a refresh rotates!), then the connection is dropped without an answer.
POST_KINDS = frozenset({"lost_response"})
KINDS = PRE_KINDS | POST_KINDS


@dataclass
class FaultSpec:
    latency_ms: float = 0.0
    rate: float = 1.0
    kinds: tuple[str, ...] = ()
    retry_after: int = 1
    hang_seconds: float = 30.0
    # How many more faults this spec may inject; None = no limit.
    remaining: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "rate": self.rate,
            "kinds": list(self.kinds),
            "retry_after": self.retry_after,
            "hang_seconds": self.hang_seconds,
            "count": self.remaining,
        }


@dataclass(frozen=True)
class FaultDecision:
    latency: float
    kind: str | None
    retry_after: int
    hang_seconds: float


def _number(spec: dict[str, Any], key: str, default: float, *, upper: float | None = None) -> float:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{key} must be a non-negative number")
    if upper is not None and value > upper:
        raise ValueError(f"{key} must be at most {upper}")
    return float(value)


def parse_spec(name: str, raw: Any) -> FaultSpec:
    if not isinstance(raw, dict):
        raise ValueError(f"fault spec for {name!r} must be an object")
    unknown = set(raw) - {"latency_ms", "rate", "kinds", "retry_after", "hang_seconds", "count"}
    if unknown:
        raise ValueError(f"unknown fault option(s) for {name!r}: {sorted(unknown)}")
    kinds_raw = raw.get("kinds", [])
    if isinstance(kinds_raw, str):
        kinds_raw = [kinds_raw]
    if not isinstance(kinds_raw, list) or not all(isinstance(k, str | int) for k in kinds_raw):
        raise ValueError("kinds must be a list of strings")
    kinds = tuple(str(k) for k in kinds_raw)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"unknown fault kind(s) {bad}; known: {sorted(KINDS)}")
    count = raw.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise ValueError("count must be a non-negative integer")
    return FaultSpec(
        latency_ms=_number(raw, "latency_ms", 0.0),
        rate=_number(raw, "rate", 1.0, upper=1.0),
        kinds=kinds,
        retry_after=int(_number(raw, "retry_after", 1)),
        hang_seconds=_number(raw, "hang_seconds", 30.0),
        remaining=count,
    )


class FaultPlan:
    """Not thread-safe on its own: the caller holds the sandbox state lock."""

    def __init__(self) -> None:
        self.specs: dict[str, FaultSpec] = {}
        self.seed: int | None = None
        self.rng = random.Random()

    def configure(self, payload: dict[str, Any]) -> None:
        """Replace every spec with those in `payload` (`{}` clears); validates before changing anything."""
        seed = payload.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError("seed must be an integer")
        specs: dict[str, FaultSpec] = {}
        for name, raw in payload.items():
            if name == "seed":
                continue
            if name != "*" and name not in ENDPOINTS:
                raise ValueError(f"unknown endpoint {name!r}; known: {['*', *ENDPOINTS]}")
            specs[name] = parse_spec(name, raw)
        self.specs = specs
        self.seed = seed
        self.rng = random.Random(seed)

    def decide(self, endpoint: str) -> FaultDecision | None:
        spec = self.specs.get(endpoint) or self.specs.get("*")
        if spec is None:
            return None
        kind: str | None = None
        exhausted = spec.remaining is not None and spec.remaining <= 0
        if spec.kinds and not exhausted and self.rng.random() < spec.rate:
            kind = spec.kinds[0] if len(spec.kinds) == 1 else self.rng.choice(spec.kinds)
            if spec.remaining is not None:
                spec.remaining -= 1
        return FaultDecision(
            latency=spec.latency_ms / 1000.0,
            kind=kind,
            retry_after=spec.retry_after,
            hang_seconds=spec.hang_seconds,
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {name: spec.to_json() for name, spec in self.specs.items()}
        if self.seed is not None:
            data["seed"] = self.seed
        return data
