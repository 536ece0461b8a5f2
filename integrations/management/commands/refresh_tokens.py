from __future__ import annotations

import json
import time
from argparse import ArgumentParser, ArgumentTypeError
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand

from integrations.lifecycle import run as refresh_run
from integrations.lifecycle.config import configuration_problem
from integrations.lifecycle.run import RunOptions, RunSummary


def _whole(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ArgumentTypeError(f"{raw!r} is not a whole number") from None
        if value < minimum:
            raise ArgumentTypeError(f"{raw!r} is below {minimum}")
        return value

    return parse


def progress_line(done: int, total: int, *, elapsed: float, width: int = 30) -> str:
    """`[#########.....]  300/1000  30%  120.0/s  ETA 6s`: one terminal line."""
    filled = width * done // total if total else width
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = f"ETA {round((total - done) / rate)}s" if rate and done < total else ""
    percent = 100 * done // total if total else 100
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {done:>{len(str(total))}}/{total} {percent:3d}%  {rate:.1f}/s  {eta}"
    )


class Command(BaseCommand):
    help = (
        "Keep every Jira connection alive at a cost that follows use: refresh connections used "
        "within --warm-within whose access token expires within --due-within, connections whose "
        "refresh token has gone unused for --max-idle, and failing ones whose backoff has ended; "
        "everything else is refreshed on demand. Also emails consent-expiry warnings and prunes "
        "old audit events. One worker per connection at a time; safe to run from several "
        "processes at once. Exit status: 0 all done, 1 some transient failures remain, "
        "2 configuration error."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--due-within",
            type=_whole(0),
            default=15,
            metavar="MINUTES",
            help="Refresh warm connections' access tokens expiring within this many minutes (default 15).",
        )
        parser.add_argument(
            "--warm-within",
            type=_whole(0),
            default=24,
            metavar="HOURS",
            help="A connection used for a Jira call within this many hours is kept warm (default 24).",
        )
        parser.add_argument(
            "--max-idle",
            type=_whole(1),
            default=30,
            metavar="DAYS",
            help="Refresh any connection whose refresh token has gone unused this many days (default 30; "
            "Atlassian drops it after 90 idle days).",
        )
        parser.add_argument(
            "--concurrency",
            type=_whole(1),
            default=RunOptions.concurrency,
            metavar="N",
            help="Refreshes in flight at once, each with its own database connection (default %(default)s).",
        )
        parser.add_argument("--limit", type=_whole(1), metavar="N", help="Refresh at most N connections.")
        parser.add_argument("--user", metavar="EMAIL", help="Only this user's connections.")
        parser.add_argument("--dry-run", action="store_true", help="List the due connections; change nothing.")
        parser.add_argument("--json", action="store_true", help="Print the summary as one JSON object.")
        parser.add_argument(
            "--ignore-backoff", action="store_true", help="Retry failing connections now, not at their next attempt."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        run_options = RunOptions(
            due_within=timedelta(minutes=options["due_within"]),
            max_idle=timedelta(days=options["max_idle"]),
            warm_within=timedelta(hours=options["warm_within"]),
            concurrency=options["concurrency"],
            limit=options["limit"],
            user_email=options["user"],
            ignore_backoff=options["ignore_backoff"],
        )
        if options["dry_run"]:
            self._dry_run(run_options, as_json=options["json"])
            problem = configuration_problem()
            if problem is not None:
                # The list is still worth reading; the run it previews would stop at once.
                self.stderr.write(f"Configuration error: {problem}")
                raise SystemExit(2)
            return
        self._started = time.monotonic()
        summary = refresh_run.refresh_due(run_options, progress=self._progress if self.stderr.isatty() else None)
        if self.stderr.isatty() and summary.due:
            self.stderr.write("")
        if options["json"]:
            self.stdout.write(json.dumps(summary.as_dict()))
        else:
            self._print_summary(summary)
        if summary.configuration_error is not None:
            self.stderr.write(f"Configuration error: {summary.configuration_error}")
        if summary.exit_code:
            raise SystemExit(summary.exit_code)

    def _progress(self, done: int, total: int) -> None:
        self.stderr.write(f"\r{progress_line(done, total, elapsed=time.monotonic() - self._started)}", ending="")
        self.stderr.flush()

    def _print_summary(self, summary: RunSummary) -> None:
        counts = summary.as_dict()
        lines = [
            f"Due: {counts['due']}",
            f"Refreshed: {counts['refreshed']}",
            f"Not due: {counts['not_due']}",
            f"Claimed elsewhere: {counts['claimed_elsewhere']}",
            f"Superseded: {counts['superseded']}",
            f"Transient failures: {counts['transient_failures']}",
            f"Needs reconnect: {counts['needs_reconnect']}",
        ]
        if counts["warnings_sent"]:
            lines.append(f"Consent-expiry warnings sent: {counts['warnings_sent']}")
        if counts["events_pruned"]:
            lines.append(f"Old events pruned: {counts['events_pruned']}")
        if counts["skipped"]:
            lines.append(f"Skipped (run stopped): {counts['skipped']}")
        lines.append(f"Elapsed: {counts['elapsed_seconds']:.2f} s ({counts['rate_per_second']:.1f} connections/s)")
        self.stdout.write("\n".join(lines))

    def _dry_run(self, run_options: RunOptions, *, as_json: bool) -> None:
        due = refresh_run.due_preview(run_options)
        if as_json:
            rows = [
                {
                    "id": item.connection_id,
                    "user": item.user_email,
                    "expires_at": item.access_token_expires_at.isoformat() if item.access_token_expires_at else None,
                    "reason": item.reason,
                }
                for item in due
            ]
            self.stdout.write(json.dumps({"dry_run": True, "due": len(rows), "connections": rows}))
            return
        for item in due:
            expires = f"{item.access_token_expires_at:%Y-%m-%d %H:%M:%S} UTC" if item.access_token_expires_at else "-"
            self.stdout.write(f"{item.connection_id}\t{item.user_email}\t{expires}\t{item.reason}")
        self.stdout.write(f"Dry run: {len(due)} connection(s) due; nothing changed.")
