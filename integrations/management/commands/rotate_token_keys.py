from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from integrations.lifecycle.keys import tokens_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt stored Jira tokens with the first key in FERNET_KEYS. Run it once every "
        "process has the new key list; drop the old key only after a run with 0 skipped."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--batch-size", type=int, default=500, help="Connections read per batch (default 500).")
        parser.add_argument("--dry-run", action="store_true", help="Count what would change; write nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        report = tokens_rotate(batch_size=options["batch_size"], dry_run=options["dry_run"])
        prefix = "Dry run, nothing written. " if report.dry_run else ""
        self.stdout.write(
            f"{prefix}Connections scanned: {report.scanned}, rotated: {report.rotated}, "
            f"already current: {report.current}, unreadable: {report.unreadable}, skipped: {report.skipped}."
        )
        if report.unreadable:
            self.stdout.write(
                "Unreadable tokens were left untouched"
                + ("." if report.dry_run else " and their connections marked 'needs reconnect'.")
            )
        if report.skipped:
            self.stdout.write("Skipped connections changed during the run: run the command again.")
