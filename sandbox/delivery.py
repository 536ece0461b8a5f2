"""Webhook deliveries: signed POSTs from background threads, retried like Atlassian's.

Nothing here runs on the thread of the request that changed an issue: `enqueue` records
the delivery and wakes the scheduler, which sends each due attempt from its own short-lived
thread, so a slow receiver delays nobody else.

Atlassian retries on 408, 409, 425, 429, any 5xx, connection failures and timeouts, for
up to about 30 minutes; RETRY_SCHEDULE spreads that over eight retries. Every attempt
carries a fresh JWT (HS256, the app's client secret; iss = client id, iat, exp) and the
same X-Atlassian-Webhook-Identifier.
"""

from __future__ import annotations

import heapq
import http.client
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import jwt

# Seconds before retry 1, 2, …: about 30 minutes in all, scaled by delivery_retry_scale.
RETRY_SCHEDULE = (10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 600.0, 600.0)
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})
JWT_TTL = 180
USER_AGENT = "Atlassian Webhook HTTP Client"
COUNTER_NAMES = ("queued", "sent", "delivered", "retried", "failed")


@dataclass(frozen=True)
class DeliverySettings:
    client_secret: str
    timeout: float
    retry_scale: float


@dataclass
class Attempt:
    retry: int
    at: float
    # The receiver's status code, or "timeout" / "connection error".
    outcome: str

    def to_json(self) -> dict[str, Any]:
        return {"retry": self.retry, "at": self.at, "outcome": self.outcome}


@dataclass
class Delivery:
    identifier: str
    url: str
    client_id: str
    event: str
    issue_key: str
    webhook_ids: list[int]
    body: bytes
    created_at: float
    # pending (sent or about to be, not acknowledged yet), delivered, failed.
    status: str = "pending"
    attempts: list[Attempt] = field(default_factory=list)
    next_attempt_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "identifier": self.identifier,
            "url": self.url,
            "event": self.event,
            "issue_key": self.issue_key,
            "webhook_ids": self.webhook_ids,
            "status": self.status,
            "attempts": [a.to_json() for a in self.attempts],
            "next_attempt_at": self.next_attempt_at,
            "created_at": self.created_at,
            "payload": json.loads(self.body),
        }


def signed_headers(*, client_id: str, client_secret: str, identifier: str, retry: int) -> dict[str, str]:
    now = int(time.time())
    # Wall-clock iat/exp, not the sandbox clock: the receiver checks them against its own.
    token = jwt.encode({"iss": client_id, "iat": now, "exp": now + JWT_TTL}, client_secret, algorithm="HS256")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Authorization": f"Bearer {token}",
        "X-Atlassian-Webhook-Identifier": identifier,
        "X-Atlassian-Webhook-Flow": "Primary",
    }
    if retry:
        headers["X-Atlassian-Webhook-Retry"] = str(retry)
    return headers


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> str:
    """One attempt; the status code as a string, or "timeout" / "connection error"."""
    parts = urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.netloc, timeout=timeout)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    try:
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return str(response.status)
    except TimeoutError:
        return "timeout"
    except (OSError, http.client.HTTPException):
        return "connection error"
    finally:
        connection.close()


def retryable(outcome: str) -> bool:
    if not outcome.isdigit():
        return True
    status = int(outcome)
    return status in RETRYABLE_STATUSES or status >= 500


class Deliverer:
    def __init__(self, settings: Callable[[], DeliverySettings]) -> None:
        self._settings = settings
        self._cond = threading.Condition()
        self._deliveries: dict[str, Delivery] = {}
        self._due: list[tuple[float, str]] = []  # (monotonic due time, identifier)
        self._counters: Counter[str] = Counter(dict.fromkeys(COUNTER_NAMES, 0))
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            self._stopping = False
        self._thread = threading.Thread(target=self._run, name="sandbox-deliveries", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def clear(self) -> None:
        """Forget every delivery (pending ones are dropped) and zero the counters."""
        with self._cond:
            self._deliveries.clear()
            self._due.clear()
            self._counters = Counter(dict.fromkeys(COUNTER_NAMES, 0))
            self._cond.notify_all()

    # ---- the producer's side -------------------------------------------------------------
    def enqueue(
        self, *, url: str, client_id: str, event: str, issue_key: str, webhook_ids: list[int], payload: dict[str, Any]
    ) -> str:
        delivery = Delivery(
            identifier=str(uuid.uuid4()),
            url=url,
            client_id=client_id,
            event=event,
            issue_key=issue_key,
            webhook_ids=webhook_ids,
            body=json.dumps(payload, separators=(",", ":")).encode(),
            created_at=time.time(),
            next_attempt_at=time.time(),
        )
        with self._cond:
            self._deliveries[delivery.identifier] = delivery
            heapq.heappush(self._due, (time.monotonic(), delivery.identifier))
            self._counters["queued"] += 1
            self._cond.notify_all()
        return delivery.identifier

    # ---- inspection ----------------------------------------------------------------------
    def snapshot(self, status: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            return [d.to_json() for d in self._deliveries.values() if status in (None, d.status)]

    def counters(self) -> dict[str, int]:
        with self._cond:
            return {**dict(self._counters), "pending": self._pending()}

    def wait_settled(self, timeout: float) -> bool:
        """Block until nothing is pending (delivered or given up), at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def _pending(self) -> int:
        return sum(1 for d in self._deliveries.values() if d.status == "pending")

    # ---- the worker ----------------------------------------------------------------------
    def _run(self) -> None:
        with self._cond:
            while not self._stopping:
                if not self._due:
                    self._cond.wait()
                    continue
                due_at, identifier = self._due[0]
                wait = due_at - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._due)
                delivery = self._deliveries.get(identifier)
                if delivery is None or delivery.status != "pending":
                    continue
                delivery.next_attempt_at = None
                threading.Thread(target=self._attempt, args=(delivery,), name="sandbox-delivery", daemon=True).start()

    def _attempt(self, delivery: Delivery) -> None:
        settings = self._settings()
        retry = len(delivery.attempts)
        headers = signed_headers(
            client_id=delivery.client_id,
            client_secret=settings.client_secret,
            identifier=delivery.identifier,
            retry=retry,
        )
        outcome = post(delivery.url, delivery.body, headers, settings.timeout)
        with self._cond:
            if self._deliveries.get(delivery.identifier) is not delivery:
                return  # cleared by a reset while in flight
            delivery.attempts.append(Attempt(retry=retry, at=time.time(), outcome=outcome))
            self._counters["sent"] += 1
            if retry:
                self._counters["retried"] += 1
            if outcome.isdigit() and 200 <= int(outcome) < 300:
                delivery.status = "delivered"
                self._counters["delivered"] += 1
            elif retryable(outcome) and retry < len(RETRY_SCHEDULE):
                delay = RETRY_SCHEDULE[retry] * settings.retry_scale
                delivery.next_attempt_at = time.time() + delay
                heapq.heappush(self._due, (time.monotonic() + delay, delivery.identifier))
            else:
                delivery.status = "failed"
                self._counters["failed"] += 1
            self._cond.notify_all()
