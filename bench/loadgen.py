"""A small threaded HTTP load generator, used when `wrk` is not installed.

One requests.Session per thread (connection pooling; a Session is not safe to share),
a fixed number of threads each sending requests back to back for a fixed time. It
costs far more CPU per request than wrk, on the same cores as the server: its figures
are a floor, and the run says which tool measured them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import requests

from bench.harness import percentile


@dataclass(frozen=True)
class LoadResult:
    tool: str
    requests: int
    # Failed connects, writes and timeouts, and answers other than 200.
    errors: int
    not_200: int
    seconds: float
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float = 0.0


def run(url: str, *, cookies: dict[str, str], headers: dict[str, str], connections: int, seconds: float) -> LoadResult:
    latencies: list[float] = []
    errors = 0
    not_200 = 0
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        nonlocal errors, not_200
        session = requests.Session()
        session.cookies.update(cookies)
        session.headers.update(headers)
        mine: list[float] = []
        failed = wrong = 0
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                response = session.get(url, allow_redirects=False, timeout=30)
                wrong += response.status_code != 200
            except requests.RequestException:
                failed += 1
            mine.append(time.perf_counter() - started)
        session.close()
        with lock:
            latencies.extend(mine)
            errors += failed + wrong
            not_200 += wrong

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return LoadResult(
        tool="bench.loadgen (threads + requests)",
        requests=len(latencies),
        errors=errors,
        not_200=not_200,
        seconds=elapsed,
        requests_per_second=len(latencies) / elapsed,
        p50_ms=1000 * percentile(latencies, 0.50),
        p99_ms=1000 * percentile(latencies, 0.99),
        max_ms=1000 * max(latencies, default=0.0),
    )
