"""Retention: delete calls (and their transcripts) older than N days. Dry run by default."""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from calls.models import Call, Message
from calls.services import call_delete_recordings


class Command(BaseCommand):
    help = "Delete calls that started more than --older-than DAYS ago (a dry run unless --execute)."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--older-than", type=int, required=True, metavar="DAYS", help="age in whole days (>= 1)"
        )
        parser.add_argument("--execute", action="store_true", help="really delete (default: dry run)")

    def handle(self, *args, older_than: int, execute: bool, **options) -> None:
        if older_than < 1:
            raise CommandError("--older-than must be at least 1 day")
        cutoff = timezone.now() - timedelta(days=older_than)
        calls = Call.objects.filter(started_at__lt=cutoff, ended_at__isnull=False)
        call_count = calls.count()
        message_count = Message.objects.filter(call__in=calls).count()
        what = (
            f"{call_count} calls ({message_count} messages) that started before {cutoff:%Y-%m-%d %H:%M} UTC"
        )
        if not execute:
            self.stdout.write(f"Dry run: would delete {what}. Run again with --execute to delete.")
            return
        # Files first: a row deleted before its file would leave the audio behind for good.
        recordings = call_delete_recordings(calls=calls)
        calls.delete()
        self.stdout.write(self.style.SUCCESS(f"Deleted {what} and {recordings} recordings."))
